//go:build unix

package chaos

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/leveetest"
)

// full reports whether LEVEE_CHAOS=full asks for the counts (make chaos) rather than
// the bounded ones of make test.
func full() bool { return os.Getenv("LEVEE_CHAOS") == "full" }

// size picks the bounded or the full count.
func size(bounded, fullCount int) int {
	if full() {
		return fullCount
	}
	return bounded
}

// envPrebuilt names, per binary, a variable that points at a prebuilt binary to use instead of
// building one (to test a released worker, or a snapshot while the tree is mid-edit).
var envPrebuilt = map[string]string{"worker": "LEVEE_CHAOS_WORKER", "natsd": "LEVEE_CHAOS_NATSD"}

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// binaries builds the worker and natsd binaries once per test run (without -race: they are
// the system under test, not the test) and returns their paths.
func binaries(t *testing.T) (worker, natsd string) {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "levee-chaos-bin-")
		if buildErr != nil {
			return
		}
		for name, pkg := range map[string]string{
			"worker": "github.com/levee-dev/levee/cmd/worker",
			"natsd":  "github.com/levee-dev/levee/internal/chaos/natsd",
		} {
			if prebuilt := os.Getenv(envPrebuilt[name]); prebuilt != "" {
				buildErr = os.Symlink(prebuilt, filepath.Join(buildDir, name))
				if buildErr != nil {
					return
				}
				continue
			}
			// The chaos tag builds the worker's crash hooks (LEVEE_TEST_CRASH) in; production
			// binaries have none.
			cmd := exec.CommandContext(context.Background(), "go", "build", "-tags", "chaos", "-o", filepath.Join(buildDir, name), pkg)
			cmd.Env = append(os.Environ(), "GOFLAGS=")
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
				return
			}
		}
	})
	require.NoError(t, buildErr)
	return filepath.Join(buildDir, "worker"), filepath.Join(buildDir, "natsd")
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// proc is a supervised child process: started in its own process group, its output appended
// to one log file across restarts, optionally restarted when it dies.
type proc struct {
	name string
	// id is a worker's id (--id), as its calls name it (Levee-Test-Worker); "" for others.
	id string
	// pg is a worker's own proxy to Postgres.
	pg      *leveetest.Proxy
	path    string
	args    []string
	env     []string
	logPath string
	// restart, if positive, restarts the process this long after it exits.
	restart time.Duration
	// onExit, if set, is told of every exit: when it was seen, how the process ended, and
	// whether kill9 or stop caused it (otherwise the process died of itself, e.g. by a crash
	// hook's SIGKILL).
	onExit func(at time.Time, err error, killed bool)

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	stopped bool
	killing bool // kill9 sent SIGKILL to the running process
	starts  int
	kills   int
}

// startProc starts p and stops it (kill -9) at the end of the test.
func startProc(t *testing.T, p *proc) *proc {
	t.Helper()
	p.mu.Lock()
	err := p.startLocked()
	p.mu.Unlock()
	require.NoError(t, err, "start %s", p.name)
	t.Cleanup(p.stop)
	return p
}

func (p *proc) startLocked() error {
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	p.starts++
	fmt.Fprintf(logf, "=== chaos: start %d of %s at %s\n", p.starts, p.name, time.Now().Format(time.RFC3339Nano))
	cmd := exec.CommandContext(context.Background(), p.path, p.args...) // stopped by kill9, not by a context
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return err
	}
	exited := make(chan struct{})
	p.cmd, p.exited = cmd, exited
	go func() {
		err := cmd.Wait()
		at := time.Now()
		fmt.Fprintf(logf, "=== chaos: %s exited: %v\n", p.name, err)
		_ = logf.Close()
		p.mu.Lock()
		killed := p.killing || p.stopped
		p.killing = false
		again := p.restart > 0 && !p.stopped && p.cmd == cmd
		p.mu.Unlock()
		if p.onExit != nil {
			p.onExit(at, err, killed)
		}
		close(exited)
		if !again {
			return
		}
		time.Sleep(p.restart)
		p.mu.Lock()
		defer p.mu.Unlock()
		if !p.stopped && p.cmd == cmd {
			_ = p.startLocked()
		}
	}()
	return nil
}

// signal sends sig to the process group of the running process; it reports whether one ran.
func (p *proc) signal(sig syscall.Signal) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.signalLocked(sig)
}

func (p *proc) signalLocked(sig syscall.Signal) bool {
	if p.cmd == nil || p.cmd.Process == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
	}
	return syscall.Kill(-p.cmd.Process.Pid, sig) == nil
}

// kill9 kills the running process with SIGKILL and waits until it is gone; it reports whether
// a process was running, and when the signal was sent. A supervised process is then restarted
// after its restart delay.
func (p *proc) kill9() (bool, time.Time) {
	p.mu.Lock()
	exited := p.exited
	at := time.Now()
	killed := p.signalLocked(syscall.SIGKILL)
	if killed {
		p.kills++
		p.killing = true
	}
	p.mu.Unlock()
	if exited != nil {
		<-exited
	}
	return killed, at
}

// startAgain starts a process that is not running (one without automatic restart).
func (p *proc) startAgain(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.exited:
	default:
		t.Fatalf("%s is still running", p.name)
	}
	require.NoError(t, p.startLocked())
}

// stop kills the process for good.
func (p *proc) stop() {
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
	p.signal(syscall.SIGCONT) // a stopped process dies on SIGKILL too, but be explicit
	p.kill9()
}

// logTail returns the last n lines of the process's log, for failure messages.
func (p *proc) logTail(n int) string {
	data, err := os.ReadFile(p.logPath)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// lastWords returns, for every exit of the process that was not a SIGKILL, the n log lines
// before it and the exit line itself: why a process ended by itself.
func (p *proc) lastWords(n int) []string {
	lines := p.logLines(0)
	var out []string
	for i, l := range lines {
		if strings.HasPrefix(l, "=== chaos: ") && strings.Contains(l, " exited: ") && !strings.HasSuffix(l, "signal: killed") {
			out = append(out, lines[max(0, i-n):i+1]...)
		}
	}
	return out
}

// logSize is the log's current size, to read only what comes after a moment.
func (p *proc) logSize() int64 {
	st, err := os.Stat(p.logPath)
	if err != nil {
		return 0
	}
	return st.Size()
}

// logLines returns the log's lines written after offset.
func (p *proc) logLines(offset int64) []string {
	f, err := os.Open(p.logPath)
	if err != nil {
		return nil
	}
	defer f.Close()
	if _, err := f.Seek(offset, 0); err != nil {
		return nil
	}
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines
}

// natsServer is one natsd process with JetStream, on a fixed port and store so that it can
// be killed and started again on the same store.
type natsServer struct {
	name string
	port int
	*proc
}

func (s *natsServer) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", s.port) }

// natsCluster is one server, or several joined by routes (a JetStream cluster).
type natsCluster struct {
	servers []*natsServer
}

func (c *natsCluster) url() string {
	urls := make([]string, len(c.servers))
	for i, s := range c.servers {
		urls[i] = s.url()
	}
	return strings.Join(urls, ",")
}

// startNATS starts n natsd processes (n > 1: a cluster with routes) with sync_interval:
// always, the durable profile of docs/reliability.md, and waits until JetStream answers.
func startNATS(t *testing.T, dir string, n int) *natsCluster {
	t.Helper()
	_, natsd := binaries(t)
	ports, cports := make([]int, n), make([]int, n)
	for i := range n {
		ports[i], cports[i] = freePort(t), freePort(t)
	}
	c := &natsCluster{}
	for i := range n {
		name := fmt.Sprintf("n%d", i+1)
		store := filepath.Join(dir, name)
		var conf strings.Builder
		fmt.Fprintf(&conf, "server_name: %s\nlisten: 127.0.0.1:%d\n", name, ports[i])
		fmt.Fprintf(&conf, "jetstream {\n  store_dir: %q\n  sync_interval: always\n}\n", store)
		if n > 1 {
			routes := make([]string, 0, n-1)
			for j := range n {
				if j != i {
					routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", cports[j]))
				}
			}
			fmt.Fprintf(&conf, "cluster {\n  name: chaos\n  listen: 127.0.0.1:%d\n  routes: [%s]\n}\n", cports[i], strings.Join(routes, ", "))
		}
		confPath := filepath.Join(dir, name+".conf")
		require.NoError(t, os.WriteFile(confPath, []byte(conf.String()), 0o644))
		p := startProc(t, &proc{name: "natsd " + name, path: natsd, args: []string{"-c", confPath},
			logPath: filepath.Join(dir, name+".log")})
		c.servers = append(c.servers, &natsServer{name: name, port: ports[i], proc: p})
	}
	for _, s := range c.servers {
		waitJetStream(t, s)
	}
	return c
}

// waitJetStream waits until s accepts connections and its JetStream answers.
func waitJetStream(t *testing.T, s *natsServer) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := func() error {
			nc, err := nats.Connect(s.url(), nats.Timeout(time.Second))
			if err != nil {
				return err
			}
			defer nc.Close()
			js, err := nc.JetStream()
			if err != nil {
				return err
			}
			_, err = js.AccountInfo(nats.MaxWait(time.Second))
			return err
		}()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("NATS %s: JetStream not ready after 30s: %v\n%s", s.name, err, s.logTail(20))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// proxiedURL is dbURL with its host replaced by the proxy's address.
func proxiedURL(t *testing.T, dbURL, proxyAddr string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	u.Host = proxyAddr
	return u.String()
}

// pgTarget is the host:port of dbURL.
func pgTarget(t *testing.T, dbURL string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	host, port := u.Hostname(), u.Port()
	if host == "" {
		host = "127.0.0.1"
	}
	if port == "" {
		port = "5432"
	}
	return net.JoinHostPort(host, port)
}
