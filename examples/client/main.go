// Command client is the README's publisher and operator: it publishes jobs, reads a status,
// and lists, replays and pauses with package admin.
package main

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/admin"
	"github.com/levee-dev/levee/leveetype"
)

type Charge struct {
	Customer string `json:"customer"`
	Cents    int    `json:"cents"`
}

func main() {
	ctx := context.Background()
	c, err := levee.NewClient(ctx, levee.ClientConfig{
		NATSURL:     os.Getenv("LEVEE_NATS_URL"),
		DatabaseURL: os.Getenv("LEVEE_DATABASE_URL"), // for Status of running and finished jobs, and admin
		Namespace:   os.Getenv("LEVEE_NAMESPACE"),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	// One job: the key makes it happen once however often it is published.
	res, err := c.Publish(ctx, "charge", Charge{"cus_1", 4200}, levee.WithKey("order-1001"))
	if err != nil {
		log.Fatal(err)
	}
	// Many jobs, asynchronously: one answer per job, refusals in results[i].Err.
	specs := []levee.JobSpec{
		{Kind: "charge", Payload: Charge{"cus_2", 990}, Key: "order-1002"},
		{Kind: "charge", Payload: Charge{"cus_3", 150}, Key: "order-1003"},
	}
	results, err := c.PublishBatch(ctx, specs, nil)
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range results {
		if r.Err != nil {
			log.Printf("job %s refused: %v", r.Key, r.Err)
		}
	}
	st, err := c.Status(ctx, res.ID) // st.State: queued, running, retrying, succeeded or dead
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(st.ID, st.State)

	// The operator's API, on the same connections; every action is audited with who did it.
	ops := admin.New(c)
	page, err := ops.JobList(ctx, admin.JobListParams{State: leveetype.StateRetrying, Limit: 100})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(page.Jobs), "retrying")
	for dj, err := range ops.DeadJobList(ctx, admin.DeadJobListParams{Kind: "charge", Reason: "max_attempts"}) {
		if err != nil {
			log.Fatal(err)
		}
		if _, err := ops.DeadJobReplay(ctx, dj, admin.DeadJobReplayParams{By: "ada"}); err != nil {
			log.Printf("replay %s: %v", dj.ID, err)
		}
	}
	if err := ops.KindPause(ctx, "charge", "ada"); err != nil {
		log.Fatal(err)
	}
}
