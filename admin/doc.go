// Package admin is Levee's operator API: what the `enqueue` CLI and the dashboard do, for
// scripts and tools of your own. It lists, finds and inspects jobs and their attempts, retries
// and cancels them, lists, replays and purges dead jobs, captures jobs no worker serves,
// pauses and resumes kinds, resets circuit breakers, reports the fleet's statistics and the
// dashboard's overview, and keeps the audit log of every action.
//
// Methods are named noun first (JobList, JobCancel, DeadJobReplay, KindPause, BreakerReset)
// and take a parameter struct where they have more than an id. An admin Client is made from a
// levee.Client and shares its connections:
//
//	c, err := levee.NewClient(ctx, levee.ClientConfig{DatabaseURL: dbURL})
//	ops := admin.New(c)
//	page, err := ops.JobList(ctx, admin.JobListParams{State: leveetype.StateDead})
//
// Every action is written to the audit log with who did it (an Actor).
package admin
