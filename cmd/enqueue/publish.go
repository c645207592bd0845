package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/cmd/internal/cli"
	"github.com/levee-dev/levee/internal/age"
	"github.com/levee-dev/levee/internal/core"
	"github.com/levee-dev/levee/internal/queue"
)

// publishOptions are publish's flags.
type publishOptions struct {
	id          string
	key         string
	maxAttempts int
	json        bool
	maxPayload  int
	file        string
	checkKey    bool
	delay       time.Duration
	at          string
}

func newPublishCmd(conn *cli.Connection) *cobra.Command {
	var o publishOptions
	cmd := &cobra.Command{
		Use:   "publish KIND (PAYLOAD | - | --file FILE)",
		Short: "Publish a job, or the jobs of a JSON Lines file",
		Long: `Publish a job of KIND and wait until the work stream has stored it. PAYLOAD is JSON;
give - to read it from stdin. KIND is 1-64 characters of [a-z0-9_-], starting with a letter or
digit. Only NATS is needed.

With --delay (a Go duration such as 90s, 10m or 36h) or --at (an RFC 3339 time such as
2026-12-24T09:00:00Z), the job waits in the Postgres ledger and a worker publishes it to the
stream when it is due (within about a second while workers run): this needs the ledger
(--database-url or LEVEE_DATABASE_URL). An --at in the past publishes the job now, through
the stream. stdout still gets the job id; stderr says when it runs. Until then 'enqueue
status ID' shows it as scheduled, 'enqueue cancel ID' cancels it and 'enqueue retry ID' runs
it now. --check-key does not apply to a delayed job.

The job id is a new ULID unless --id sets it; the idempotency key is the id unless --key sets
it. Publishing an id the stream already holds (within its deduplication window) stores the job
once and reports "duplicate": true (about the id: the stream keeps the first payload); that is
not an error, but when the payload differs from the one kept a warning says the new one was
dropped, and --json adds "payload_differs". A key used before with another payload makes the
job dead-letter later (key_reused_with_different_payload): --check-key asks the ledger first
and publishes nothing in that case (exit 4); with the same payload it reports
"key_duplicate": true (the job takes the first one's outcome). If no worker has ever served
KIND, a warning is printed and the job waits in the stream until one does.

With --file, KIND applies to every line of FILE (- for stdin), a JSON Lines file with one job
per line:
  {"payload": <any JSON>, "id": "optional", "key": "optional", "max_attempts": 3,
   "delay": "10m" or "at": "2026-12-24T09:00:00Z" (optional, not both)}
Blank lines are skipped. Every line is checked before anything is published: one malformed
line publishes nothing. The jobs are then published asynchronously, with a progress bar on a
terminal; one line per job goes to stdout (its id, or its JSON with --json), refused jobs and
a summary to stderr. --delay and --at apply to the lines that give neither "delay" nor "at".
Delayed lines are stored in the ledger one by one (and need it); the others go to the stream
in one batch.

Output: the job id, or with --json {"id":...,"kind":...,"key":...,"duplicate":bool,
"run_at":...}, with "payload_differs" for a duplicate when it can be told and "key_duplicate"
with --check-key. "run_at" is when a delayed job is due (RFC 3339), null for a job published
now; a delayed job whose id is scheduled already is a duplicate (the first one stands).

Exit codes:
  0  published (with --file: every job)
  1  error: NATS unreachable, stream full, or (with --file) some job refused
  2  usage error: bad flag or arguments, invalid kind, id or key, payload that is not JSON or
     is over --max-payload or the NATS server's max_payload, malformed line in --file, a
     --delay that is not positive, an --at that is not RFC 3339, or both
  4  --check-key: the key was used with another payload; nothing was published`,
		Example: `  enqueue publish email '{"to":"ada@example.com","template":"welcome"}'
  enqueue publish charge '{"amount":1200}' --key order-1234 --max-attempts 3 --json
  echo '{"url":"https://example.com/hook"}' | enqueue publish http -
  enqueue publish email --file jobs.jsonl
  enqueue publish reminder '{"user":42}' --delay 72h
  enqueue publish capture '{"auth":"au_123"}' --at 2026-12-24T09:00:00Z --json
  enqueue publish noop '{}' --nats-url nats://nats.internal:4222 --namespace staging`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runPublish(cmd, conn, o, args)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.id, "id", "", "job id (default: a new ULID)")
	fs.StringVar(&o.key, "key", "", "idempotency key (default: the job id)")
	fs.IntVar(&o.maxAttempts, "max-attempts", 0, fmt.Sprintf("attempt budget, 1 to %d; 0 means the kind's policy", queue.MaxAttemptsLimit))
	fs.BoolVar(&o.json, "json", false, "print the result as JSON")
	fs.IntVar(&o.maxPayload, "max-payload", queue.DefaultMaxPayload, "largest payload accepted, in bytes")
	fs.StringVar(&o.file, "file", "", "publish the jobs of this JSON Lines file (- for stdin) instead of one PAYLOAD")
	fs.BoolVar(&o.checkKey, "check-key", false, "ask the ledger first whether the key was used, and refuse a key used with another payload (needs Postgres)")
	fs.DurationVar(&o.delay, "delay", 0, "run the job after this long, e.g. 10m or 36h: it waits in the Postgres ledger until then")
	fs.StringVar(&o.at, "at", "", "run the job at this RFC 3339 time, e.g. 2026-12-24T09:00:00Z (a time in the past runs now); needs Postgres")
	return cmd
}

// when is a job's --delay or --at (or a --file line's "delay" or "at"): at most one is set.
type when struct {
	delay time.Duration
	at    time.Time
}

// delayed reports whether the job waits in the ledger: a delay, or a time after now (a time
// in the past publishes the job now, with no need of the ledger).
func (w when) delayed(now time.Time) bool { return w.delay > 0 || w.at.After(now) }

// options returns the publish options of w.
func (w when) options() []levee.PublishOption {
	switch {
	case w.delay > 0:
		return []levee.PublishOption{levee.WithDelay(w.delay)}
	case !w.at.IsZero():
		return []levee.PublishOption{levee.WithRunAt(w.at)}
	}
	return nil
}

// parseWhen checks a delay and a time to run at, named by delayName and atName in errors.
// delayGiven says whether the delay was given at all (a zero --delay is refused, not ignored).
func parseWhen(delay time.Duration, delayGiven bool, at, delayName, atName string) (when, error) {
	var w when
	if delayGiven && at != "" {
		return w, fmt.Errorf("give %s or %s, not both", delayName, atName)
	}
	if delayGiven {
		if delay <= 0 {
			return w, fmt.Errorf("invalid %s %s: give a positive duration such as 90s, 10m or 36h (leave it out to run now)", delayName, delay)
		}
		w.delay = delay
	}
	if at != "" {
		t, err := time.Parse(time.RFC3339, at)
		if err != nil {
			return w, fmt.Errorf("invalid %s %q: give an RFC 3339 time such as 2026-12-24T09:00:00Z or 2026-12-24T10:00:00+01:00", atName, at)
		}
		w.at = t
	}
	return w, nil
}

// errDelayedNeedsDB explains why a delayed publish needs the database URL.
var errDelayedNeedsDB = errors.New("delayed jobs wait in the Postgres ledger until they are due: pass --database-url (or set LEVEE_DATABASE_URL)")

// printScheduled says on w when a delayed job runs, relative to now: "published 01J… (kind
// x), runs at 2026-12-24T09:00:00Z (in 3h02m)"; or that an --at in the past ran it now.
func printScheduled(w io.Writer, res levee.PublishResult, wanted when, now time.Time) {
	switch {
	case res.RunAt != nil:
		fmt.Fprintf(w, "published %s (kind %s), runs at %s\n", res.ID, res.Kind, runAtText(*res.RunAt, now))
	case res.Duplicate && wanted.delayed(now):
		fmt.Fprintf(w, "note: job %s is scheduled already; the first publish's payload and time stand\n", res.ID)
	case !wanted.at.IsZero():
		fmt.Fprintf(w, "note: %s is in the past: job %s was published to run now\n", wanted.at.UTC().Format(time.RFC3339), res.ID)
	}
}

// runAtText writes a due time in UTC with how far it is from now: "2026-12-24T09:00:00Z (in
// 3h02m)", or "(due)" once it has passed.
func runAtText(t, now time.Time) string {
	s := t.UTC().Format(time.RFC3339)
	if d := t.Sub(now); d >= time.Second {
		return s + " (in " + age.Format(d) + ")"
	}
	return s + " (due)"
}

func runPublish(cmd *cobra.Command, conn *cli.Connection, o publishOptions, args []string) error {
	kind := args[0]
	if err := queue.ValidateKind(kind); err != nil {
		return &cli.UsageError{Err: err}
	}
	if o.maxPayload <= 0 {
		return cli.Usagef("invalid --max-payload %d: give a positive number of bytes", o.maxPayload)
	}
	if o.maxAttempts < 0 || o.maxAttempts > queue.MaxAttemptsLimit {
		return cli.Usagef("invalid --max-attempts %d: use 1 to %d, or 0 for the kind's policy", o.maxAttempts, queue.MaxAttemptsLimit)
	}
	if o.file != "" && o.checkKey {
		return cli.Usagef("--check-key checks one job: publish the jobs of --file one by one to check their keys")
	}
	wanted, err := parseWhen(o.delay, cmd.Flags().Changed("delay"), o.at, "--delay", "--at")
	if err != nil {
		return &cli.UsageError{Err: err}
	}
	if wanted.delayed(time.Now()) && o.checkKey {
		return cli.Usagef("--check-key applies to a job published now: a delayed job's key is checked when it runs")
	}
	if o.file != "" {
		if len(args) != 1 {
			return cli.Usagef("give either PAYLOAD or --file, not both")
		}
		if o.id != "" || o.key != "" {
			return cli.Usagef("--id and --key apply to one job; with --file, set \"id\" and \"key\" on each line")
		}
		return publishFile(cmd, conn, o, kind, wanted)
	}
	if len(args) != 2 {
		return cli.Usagef("missing PAYLOAD: give JSON, - to read stdin, or --file FILE")
	}
	if o.id != "" {
		if err := queue.ValidateID(o.id); err != nil {
			return &cli.UsageError{Err: err}
		}
	}
	if o.key != "" {
		if err := queue.ValidateKey(o.key); err != nil {
			return &cli.UsageError{Err: err}
		}
	}
	payload, err := readPayload(cmd.InOrStdin(), args[1], o.maxPayload)
	if err != nil {
		return err
	}

	ctx := cmd.Context()
	// Publishing needs no Postgres, but for --check-key and a delayed job.
	delayed := wanted.delayed(time.Now())
	if delayed && conn.DatabaseURL == "" {
		return errDelayedNeedsDB
	}
	c, _, err := openClient(ctx, conn, clientNeeds{maxPayload: o.maxPayload, db: o.checkKey || delayed})
	if err != nil {
		return delayedConnectError(err, delayed)
	}
	defer c.Close()
	if err := warnUnserved(cmd, c, kind, delayed); err != nil {
		return err
	}
	opts := []levee.PublishOption{levee.WithID(o.id), levee.WithKey(o.key), levee.WithMaxAttempts(o.maxAttempts)}
	if o.checkKey {
		opts = append(opts, levee.WithKeyCheck())
	}
	opts = append(opts, wanted.options()...)
	res, err := c.Publish(ctx, kind, payload, opts...)
	switch {
	case errors.Is(err, levee.ErrDatabaseRequired):
		return errDelayedNeedsDB
	case errors.Is(err, levee.ErrPayloadTooLarge):
		return &cli.UsageError{Err: err} // the payload is the user's to change: exit 2
	case errors.Is(err, levee.ErrKeyReused):
		return &cli.ExitCodeError{Code: exitConflict, Err: err}
	case err != nil:
		return err
	}
	if res.PayloadDiffers != nil && *res.PayloadDiffers {
		fmt.Fprintf(cmd.ErrOrStderr(), "warning: job %s was already published with another payload; the stream keeps the first, and this one was dropped (give another --id)\n", res.ID)
	}
	if res.KeyDuplicate != nil && *res.KeyDuplicate {
		fmt.Fprintf(cmd.ErrOrStderr(), "note: key %s was used before with this payload: the job will take the first one's outcome and not run\n", res.Key)
	}
	printScheduled(cmd.ErrOrStderr(), res, wanted, time.Now())
	return printResult(cmd.OutOrStdout(), res, o.json)
}

// delayedConnectError adds to a failed connection, for a delayed publish, why Postgres is
// needed.
func delayedConnectError(err error, delayed bool) error {
	var ce *core.ConnectError
	if delayed && errors.As(err, &ce) && ce.Service == "postgres" {
		return fmt.Errorf("delayed jobs wait in the Postgres ledger: %w", err)
	}
	return err
}

// readPayload returns the payload argument, or stdin's content for "-", checked to be JSON
// of at most limit bytes.
func readPayload(stdin io.Reader, arg string, limit int) (json.RawMessage, error) {
	payload := []byte(arg)
	if arg == "-" {
		var err error
		if payload, err = io.ReadAll(io.LimitReader(stdin, int64(limit)+1)); err != nil {
			return nil, fmt.Errorf("read payload from stdin: %w", err)
		}
	}
	if err := checkPayload(payload, limit); err != nil {
		return nil, &cli.UsageError{Err: err}
	}
	return payload, nil
}

// checkPayload reports a payload that is over limit bytes or is not JSON.
func checkPayload(payload []byte, limit int) error {
	if len(payload) > limit {
		if len(payload) == limit+1 {
			return fmt.Errorf("payload is over the --max-payload limit of %d bytes (raise --max-payload, or store the data elsewhere and send a reference)", limit)
		}
		return fmt.Errorf("payload is %d bytes, over the --max-payload limit of %d bytes (raise --max-payload, or store the data elsewhere and send a reference)", len(payload), limit)
	}
	if len(bytes.TrimSpace(payload)) == 0 {
		return errors.New("payload is empty: give JSON, such as {} or null")
	}
	if !json.Valid(payload) {
		var v any
		err := json.Unmarshal(payload, &v)
		return fmt.Errorf("payload is not valid JSON: %w", err)
	}
	return nil
}

// warnUnserved prints a warning when no worker has ever served kind.
// warnUnserved warns when no worker has ever served kind; delayed says the jobs wait in the
// ledger first.
func warnUnserved(cmd *cobra.Command, c *levee.Client, kind string, delayed bool) error {
	served, err := c.KindServed(cmd.Context(), kind)
	if err != nil {
		return err
	}
	switch {
	case served:
	case delayed:
		fmt.Fprintf(cmd.ErrOrStderr(), "warning: no worker has ever served kind %s; the job waits in the ledger until it is due, then in the stream until a worker serves the kind\n", kind)
	default:
		fmt.Fprintf(cmd.ErrOrStderr(), "warning: no worker has ever served kind %s; the job waits in the stream until one does\n", kind)
	}
	return nil
}

func printResult(w io.Writer, res levee.PublishResult, asJSON bool) error {
	if asJSON {
		return json.NewEncoder(w).Encode(res)
	}
	_, err := fmt.Fprintln(w, res.ID)
	return err
}

// fileJob is one line of a --file.
type fileJob struct {
	Payload     json.RawMessage `json:"payload"`
	ID          string          `json:"id"`
	Key         string          `json:"key"`
	MaxAttempts *int            `json:"max_attempts"`
	// Delay is a Go duration ("10m"), At an RFC 3339 time: the job waits in the ledger.
	Delay *string `json:"delay"`
	At    string  `json:"at"`
}

// publishFile publishes every job of o.file, after checking them all: the delayed ones one by
// one into the ledger, the others in one batch to the stream. wanted is --delay or --at, for
// the lines that give neither.
func publishFile(cmd *cobra.Command, conn *cli.Connection, o publishOptions, kind string, wanted when) error {
	var r io.Reader
	name := o.file
	if o.file == "-" {
		r, name = cmd.InOrStdin(), "stdin"
	} else {
		f, err := os.Open(o.file)
		if err != nil {
			return fmt.Errorf("open --file: %w", err)
		}
		defer f.Close()
		r = f
	}
	jobs, lines, err := readJobs(r, kind, o.maxAttempts, o.maxPayload, wanted)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	var now, later []int // indexes into jobs
	start := time.Now()
	for i, spec := range jobs {
		if (when{delay: spec.Delay, at: spec.RunAt}).delayed(start) {
			later = append(later, i)
		} else {
			now = append(now, i)
		}
	}
	if len(later) > 0 && conn.DatabaseURL == "" {
		return fmt.Errorf("%s line %d: %w; nothing was published", name, lines[later[0]], errDelayedNeedsDB)
	}

	ctx := cmd.Context()
	stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
	// Publishing needs no Postgres, but for delayed jobs.
	c, _, err := openClient(ctx, conn, clientNeeds{maxPayload: o.maxPayload, db: len(later) > 0})
	if err != nil {
		return delayedConnectError(err, len(later) > 0)
	}
	defer c.Close()
	if len(jobs) > 0 {
		if err := warnUnserved(cmd, c, kind, len(later) == len(jobs)); err != nil {
			return err
		}
	}

	var (
		bar    *progressbar.ProgressBar
		onDone func(levee.PublishResult)
	)
	if cli.IsTerminal(stderr) && len(jobs) > 0 {
		bar = progressbar.NewOptions(len(jobs),
			progressbar.OptionSetWriter(stderr),
			progressbar.OptionSetDescription("publishing"),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("jobs"),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish(),
		)
		onDone = func(levee.PublishResult) { _ = bar.Add(1) }
	}
	results := make([]levee.PublishResult, len(jobs))
	for _, i := range later {
		spec := jobs[i]
		res, err := c.Publish(ctx, kind, spec.Payload, levee.WithID(spec.ID), levee.WithKey(spec.Key),
			levee.WithMaxAttempts(spec.MaxAttempts), levee.WithDelay(spec.Delay), levee.WithRunAt(spec.RunAt))
		if errors.Is(err, levee.ErrDatabaseRequired) {
			err = errDelayedNeedsDB
		}
		if err != nil {
			res = levee.PublishResult{ID: spec.ID, Kind: spec.Kind, Key: spec.Key, Err: err}
		}
		results[i] = res
		if onDone != nil {
			onDone(res)
		}
	}
	var batchErr error
	if len(now) > 0 {
		batch := make([]levee.JobSpec, len(now))
		for k, i := range now {
			batch[k] = jobs[i]
			batch[k].RunAt = time.Time{} // a time in the past: now
		}
		var res []levee.PublishResult
		res, batchErr = c.PublishBatch(ctx, batch, onDone)
		for k, i := range now {
			if k < len(res) {
				results[i] = res[k]
			} else {
				results[i] = levee.PublishResult{ID: jobs[i].ID, Kind: kind, Key: jobs[i].Key, Err: batchErr}
			}
		}
	}
	if bar != nil {
		_ = bar.Finish() // clears the bar before the per-job lines and the summary
	}

	var published, duplicates, failed, scheduled int
	for i, res := range results {
		if res.Err != nil {
			failed++
			fmt.Fprintf(stderr, "enqueue: %s line %d: job %s: %v\n", name, lines[i], res.ID, res.Err)
			continue
		}
		published++
		if res.Duplicate {
			duplicates++
		}
		if res.RunAt != nil {
			scheduled++
		}
		if err := printResult(stdout, res, o.json); err != nil {
			return err
		}
	}
	more := ""
	if scheduled > 0 {
		more = fmt.Sprintf("; %d scheduled to run later", scheduled)
	}
	fmt.Fprintf(stderr, "published %s (%s, %d failed%s)\n", cli.Count(published, "job"), cli.Count(duplicates, "duplicate"), failed, more)
	if batchErr != nil {
		return batchErr
	}
	if failed > 0 {
		return &cli.ExitCodeError{Code: cli.ExitError}
	}
	return nil
}

// maxJobLineOverhead is what a --file line may hold besides its payload: id, key, field names.
const maxJobLineOverhead = 64 << 10

// readJobs reads and checks every job of a JSON Lines stream. lines[i] is the line number of
// jobs[i]. A malformed line is a usage error naming the first such line; nothing is returned
// then, so nothing is published. wanted applies to the lines without "delay" or "at".
func readJobs(r io.Reader, kind string, maxAttempts, maxPayload int, wanted when) (jobs []levee.JobSpec, lines []int, err error) {
	sc := bufio.NewScanner(r)
	maxLine := maxPayload + maxJobLineOverhead
	sc.Buffer(make([]byte, 0, min(maxLine, 64<<10)), maxLine)
	var (
		first error
		bad   int
		n     int
	)
	for sc.Scan() {
		n++
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		spec, err := parseJobLine(line, kind, maxAttempts, maxPayload, wanted)
		if err != nil {
			bad++
			if first == nil {
				first = fmt.Errorf("line %d: %w", n, err)
			}
			continue
		}
		jobs = append(jobs, spec)
		lines = append(lines, n)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, nil, cli.Usagef("line %d: longer than %d bytes (the payload limit, --max-payload, is %d)", n+1, maxLine, maxPayload)
		}
		return nil, nil, fmt.Errorf("read after line %d: %w", n, err)
	}
	if first != nil {
		more := ""
		if bad > 1 {
			more = fmt.Sprintf(" (and %d more malformed lines)", bad-1)
		}
		return nil, nil, cli.Usagef("%w%s; nothing was published", first, more)
	}
	return jobs, lines, nil
}

// parseJobLine checks one --file line and returns its job; wanted applies unless the line
// gives "delay" or "at".
func parseJobLine(line []byte, kind string, maxAttempts, maxPayload int, wanted when) (levee.JobSpec, error) {
	var j fileJob
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return levee.JobSpec{}, fmt.Errorf("not a job object {\"payload\": ..., \"id\", \"key\", \"max_attempts\", \"delay\", \"at\"}: %w", err)
	}
	if dec.More() {
		return levee.JobSpec{}, errors.New("more than one JSON value on the line")
	}
	if j.Payload == nil {
		return levee.JobSpec{}, errors.New(`missing "payload"`)
	}
	if err := checkPayload(j.Payload, maxPayload); err != nil {
		return levee.JobSpec{}, err
	}
	if j.ID != "" {
		if err := queue.ValidateID(j.ID); err != nil {
			return levee.JobSpec{}, err
		}
	}
	if j.Key != "" {
		if err := queue.ValidateKey(j.Key); err != nil {
			return levee.JobSpec{}, err
		}
	}
	if j.MaxAttempts != nil {
		maxAttempts = *j.MaxAttempts
		if maxAttempts < 0 || maxAttempts > queue.MaxAttemptsLimit {
			return levee.JobSpec{}, fmt.Errorf("invalid max_attempts %d: use 1 to %d, or 0 for the kind's policy", maxAttempts, queue.MaxAttemptsLimit)
		}
	}
	if j.Delay != nil || j.At != "" {
		var delay time.Duration
		if j.Delay != nil {
			d, err := time.ParseDuration(*j.Delay)
			if err != nil {
				return levee.JobSpec{}, fmt.Errorf("invalid \"delay\" %q: give a Go duration such as \"90s\", \"10m\" or \"36h\"", *j.Delay)
			}
			delay = d
		}
		w, err := parseWhen(delay, j.Delay != nil, j.At, `"delay"`, `"at"`)
		if err != nil {
			return levee.JobSpec{}, err
		}
		wanted = w
	}
	return levee.JobSpec{Kind: kind, Payload: j.Payload, ID: j.ID, Key: j.Key, MaxAttempts: maxAttempts,
		Delay: wanted.delay, RunAt: wanted.at}, nil
}
