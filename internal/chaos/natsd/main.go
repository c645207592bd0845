// Command natsd is the NATS server of the fault-injection suite (internal/chaos): the
// nats-server/v2 library in a process of its own, so that a test can kill -9 it and start it
// again on the same store, with settings the Debian nats-server 2.9 rejects (sync_interval).
//
//	natsd -c server.conf
//
// The file is a nats-server config file (listen, jetstream { store_dir, sync_interval },
// cluster { routes }, ...). natsd runs until SIGINT or SIGTERM.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/nats-io/nats-server/v2/server"
)

func main() {
	conf := flag.String("c", "", "nats-server config file (required)")
	flag.Parse()
	if *conf == "" {
		fmt.Fprintln(os.Stderr, "natsd: no config file: pass -c FILE")
		os.Exit(2)
	}
	opts, err := server.ProcessConfigFile(*conf)
	if err != nil {
		fmt.Fprintf(os.Stderr, "natsd: config %s: %v\n", *conf, err)
		os.Exit(2)
	}
	s, err := server.NewServer(opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "natsd: %v\n", err)
		os.Exit(1)
	}
	s.ConfigureLogger()
	if err := server.Run(s); err != nil {
		fmt.Fprintf(os.Stderr, "natsd: %v\n", err)
		os.Exit(1)
	}
	s.WaitForShutdown()
}
