// Package dashboard is Levee's web dashboard: an http.Handler that shows a namespace's jobs,
// kinds and dead-letter queue, and lets operators act on them through the same service layer
// as the enqueue CLI (an *admin.Client satisfies Service).
//
// Pages are server-rendered with html/template and work without JavaScript: every action is a
// form that posts and redirects. A small embedded script refreshes the live pages no more often
// than Options.MinPoll. There is no front-end build step: templates, CSS and the script are
// embedded with go:embed.
//
// Pages:
//
//	/                overview: counts by state, the last hour's activity (SVG), DLQ depth,
//	                 backlog, banners for open breakers and paused kinds
//	/kinds           one row per kind, with pause/resume and breaker reset
//	/jobs            jobs by state, kind and time, cursor paging; ?q= finds a job by id or key
//	/jobs/{id}       one job: attempts, key, result, payload (hidden by default), DLQ entry
//	/dlq             dead jobs grouped by kind and reason, with enqueue dlq list's filters
//	/dlq/bulk        replay or purge every dead job matching a filter (typed count, background)
//	/tasks/{id}      a background bulk action's progress
//	/audit           who did what
//
// Load: counts come from Service.Overview, computed at most once per MinPoll and shared by all
// requests and tabs; DLQ scans are cached the same way per filter, one at a time; the refresh
// script's polls of a page share one rendering per MinPoll. Ten open tabs cost what one does.
//
// Security: without Users or a trusted proxy header the handler answers only loopback clients.
// Roles are viewer (read) and operator (read and act). Options.ReadOnly refuses every state
// change with 403, whoever asks. Cross-origin state changes are refused
// (http.CrossOriginProtection) and every response carries a strict Content-Security-Policy.
// Payloads are shown only to operators, or to viewers with AllowPayloads, and never for the
// kinds in RedactKinds.
package dashboard
