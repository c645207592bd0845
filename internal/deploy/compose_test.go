package deploy_test

import (
	"bufio"
	"bytes"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// root is the repository root, seen from this package's directory (where go test runs).
var root = filepath.Join("..", "..")

// compose is the part of the Compose file format that docker-compose.yml uses. Decoding is
// strict, so a misspelt key (depends_on, stop_grace_period) fails here rather than being
// ignored; a key new to the file needs a field here.
type compose struct {
	Services map[string]service `yaml:"services"`
	Volumes  map[string]any     `yaml:"volumes"`
}

type service struct {
	Image           string               `yaml:"image"`
	Build           string               `yaml:"build"`
	Command         []string             `yaml:"command"`
	Environment     map[string]string    `yaml:"environment"`
	Ports           []string             `yaml:"ports"`
	Volumes         []string             `yaml:"volumes"`
	DependsOn       map[string]dependsOn `yaml:"depends_on"`
	Healthcheck     *healthcheck         `yaml:"healthcheck"`
	Restart         string               `yaml:"restart"`
	StopGracePeriod string               `yaml:"stop_grace_period"`
}

type dependsOn struct {
	Condition string `yaml:"condition"`
}

type healthcheck struct {
	Test        []string `yaml:"test"`
	Interval    string   `yaml:"interval"`
	Timeout     string   `yaml:"timeout"`
	StartPeriod string   `yaml:"start_period"`
	Retries     int      `yaml:"retries"`
}

func loadCompose(t *testing.T) compose {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "docker-compose.yml"))
	require.NoError(t, err)
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var c compose
	require.NoError(t, dec.Decode(&c), "docker-compose.yml")
	return c
}

func TestComposeServices(t *testing.T) {
	t.Parallel()
	c := loadCompose(t)
	require.ElementsMatch(t, []string{"nats", "postgres", "worker"}, slices.Collect(maps.Keys(c.Services)))

	nats := c.Services["nats"]
	require.Equal(t, "nats:2.10", nats.Image)
	require.Contains(t, nats.Command, "-js", "NATS runs with JetStream")
	require.Equal(t, "/data", flagValue(nats.Command, "-sd"), "JetStream stores on the volume")
	require.Contains(t, nats.Volumes, "nats-data:/data")

	pg := c.Services["postgres"]
	require.Equal(t, "postgres:16", pg.Image)
	require.NotNil(t, pg.Healthcheck, "the worker waits for Postgres to be healthy")
	require.Contains(t, pg.Healthcheck.Test, "pg_isready")

	w := c.Services["worker"]
	require.Equal(t, ".", w.Build, "the worker is built from the repository's Dockerfile")
	require.Empty(t, w.Image)
}

// Nothing is published beyond the host's loopback: Postgres trusts every connection and the
// worker's HTTP endpoints have no authentication.
func TestComposePortsAreLoopbackOnly(t *testing.T) {
	t.Parallel()
	for name, s := range loadCompose(t).Services {
		for _, p := range s.Ports {
			parts := strings.Split(p, ":")
			require.Len(t, parts, 3, "service %s: port %q must be HOST_IP:HOST_PORT:CONTAINER_PORT", name, p)
			require.Equal(t, "127.0.0.1", parts[0], "service %s: port %q", name, p)
		}
	}
}

func TestComposeVolumes(t *testing.T) {
	t.Parallel()
	c := loadCompose(t)
	used := map[string]bool{}
	for name, s := range c.Services {
		for _, v := range s.Volumes {
			parts := strings.Split(v, ":")
			require.GreaterOrEqual(t, len(parts), 2, "service %s: volume %q", name, v)
			src := parts[0]
			if strings.HasPrefix(src, ".") || strings.HasPrefix(src, "/") {
				require.FileExists(t, filepath.Join(root, src), "service %s: bind mount %q", name, v)
				require.Equal(t, "ro", parts[len(parts)-1], "service %s: bind mounts are read-only: %q", name, v)
				continue
			}
			require.Contains(t, c.Volumes, src, "service %s: named volume %q is declared under volumes", name, src)
			used[src] = true
		}
	}
	for v := range c.Volumes {
		require.True(t, used[v], "volume %s is declared but unused", v)
	}
}

func TestComposeWorker(t *testing.T) {
	t.Parallel()
	c := loadCompose(t)
	w := c.Services["worker"]
	env := w.Environment

	natsURL, err := url.Parse(env["LEVEE_NATS_URL"])
	require.NoError(t, err)
	require.Equal(t, "nats", natsURL.Scheme)
	require.Equal(t, "nats", natsURL.Hostname(), "LEVEE_NATS_URL names the nats service")
	require.Equal(t, "4222", natsURL.Port())
	require.Contains(t, c.Services, natsURL.Hostname())

	dbURL, err := url.Parse(env["LEVEE_DATABASE_URL"])
	require.NoError(t, err)
	require.Equal(t, "postgres", dbURL.Scheme)
	require.Equal(t, "postgres", dbURL.Hostname(), "LEVEE_DATABASE_URL names the postgres service")
	require.Equal(t, "5432", dbURL.Port())
	require.Contains(t, c.Services, dbURL.Hostname())

	require.NotEmpty(t, env["LEVEE_CONFIG"])
	require.True(t, slices.ContainsFunc(w.Volumes, func(v string) bool {
		parts := strings.Split(v, ":")
		return len(parts) >= 2 && parts[1] == env["LEVEE_CONFIG"]
	}), "LEVEE_CONFIG %s is mounted into the container", env["LEVEE_CONFIG"])

	// HTTP: bound on all interfaces inside the container, published on loopback, probed by the
	// health check on the same port.
	_, httpPort, err := net.SplitHostPort(env["LEVEE_HTTP_ADDR"])
	require.NoError(t, err, "LEVEE_HTTP_ADDR")
	require.Contains(t, w.Ports, "127.0.0.1:"+httpPort+":"+httpPort)

	require.Equal(t, map[string]dependsOn{
		"postgres": {Condition: "service_healthy"},
		"nats":     {Condition: "service_started"}, // the nats image has nothing to run a check with
	}, w.DependsOn)

	hc := w.Healthcheck
	require.NotNil(t, hc, "the worker has a health check")
	require.Equal(t, "CMD", hc.Test[0], "exec form: the image has no shell")
	require.Equal(t, dockerfileBinDir(t)+"worker", hc.Test[1], "the check runs the image's worker binary")
	require.Equal(t, "health", hc.Test[2])
	probe, err := url.Parse(flagValue(hc.Test, "--url"))
	require.NoError(t, err)
	require.Equal(t, "/readyz", probe.Path)
	require.Equal(t, "127.0.0.1", probe.Hostname())
	require.Equal(t, httpPort, probe.Port())
	for _, d := range []string{hc.Interval, hc.Timeout, hc.StartPeriod} {
		_, err := time.ParseDuration(d)
		require.NoError(t, err, "healthcheck durations")
	}

	require.Equal(t, "on-failure", w.Restart, "a drained worker exits 0 and stays down")
	grace, err := time.ParseDuration(w.StopGracePeriod)
	require.NoError(t, err, "stop_grace_period")
	require.Greater(t, grace, 30*time.Second, "longer than the worker's default --shutdown-timeout, so a drain is not cut by SIGKILL")
}

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd  string // upper case: FROM, RUN, …
	args string
}

// stage is one FROM … section of a Dockerfile.
type stage struct {
	from, name string
	body       []instruction
}

func loadDockerfile(t *testing.T) []stage {
	t.Helper()
	f, err := os.Open(filepath.Join(root, "Dockerfile"))
	require.NoError(t, err)
	defer func() { _ = f.Close() }()
	var (
		stages []stage
		cur    strings.Builder
	)
	flush := func() {
		line := strings.TrimSpace(cur.String())
		cur.Reset()
		if line == "" {
			return
		}
		cmd, args, _ := strings.Cut(line, " ")
		in := instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		if in.cmd == "FROM" {
			fields := strings.Fields(in.args)
			s := stage{from: fields[0]}
			if len(fields) == 3 && strings.EqualFold(fields[1], "AS") {
				s.name = fields[2]
			}
			stages = append(stages, s)
			return
		}
		require.NotEmpty(t, stages, "Dockerfile: %s before FROM", in.cmd)
		stages[len(stages)-1].body = append(stages[len(stages)-1].body, in)
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") {
			continue
		}
		if cont, ok := strings.CutSuffix(line, "\\"); ok {
			cur.WriteString(cont + " ")
			continue
		}
		cur.WriteString(line)
		flush()
	}
	require.NoError(t, sc.Err())
	flush()
	return stages
}

func (s stage) all(cmd string) []string {
	var out []string
	for _, in := range s.body {
		if in.cmd == cmd {
			out = append(out, in.args)
		}
	}
	return out
}

// dockerfileBinDir is where the final stage copies the binaries, with a trailing slash.
func dockerfileBinDir(t *testing.T) string {
	t.Helper()
	stages := loadDockerfile(t)
	copies := stages[len(stages)-1].all("COPY")
	require.NotEmpty(t, copies, "the final stage copies the binaries")
	fields := strings.Fields(copies[0])
	dst := fields[len(fields)-1]
	require.True(t, strings.HasSuffix(dst, "/"), "COPY destination %q is a directory", dst)
	return dst
}

func TestDockerfile(t *testing.T) {
	t.Parallel()
	stages := loadDockerfile(t)
	require.GreaterOrEqual(t, len(stages), 2, "multi-stage: the toolchain stays out of the image")
	build, final := stages[0], stages[len(stages)-1]
	require.True(t, strings.HasPrefix(build.from, "golang:1.26"), "builder %s", build.from)
	require.NotEmpty(t, build.name)

	// Both binaries, static: every go build runs with CGO_ENABLED=0 and -trimpath.
	cgoOff := slices.ContainsFunc(build.all("ENV"), func(e string) bool { return strings.Contains(e, "CGO_ENABLED=0") })
	built := map[string]bool{}
	for _, run := range build.all("RUN") {
		for seg := range strings.SplitSeq(run, "&&") {
			if !strings.Contains(seg, "go build") {
				continue
			}
			require.True(t, cgoOff || strings.Contains(seg, "CGO_ENABLED=0"), "static build: %s", seg)
			require.Contains(t, seg, "-trimpath", seg)
			for _, pkg := range []string{"./cmd/worker", "./cmd/enqueue"} {
				if strings.Contains(seg, pkg) {
					built[pkg] = true
				}
			}
		}
	}
	require.True(t, built["./cmd/worker"], "builds the worker")
	require.True(t, built["./cmd/enqueue"], "builds enqueue")

	require.True(t, strings.HasPrefix(final.from, "gcr.io/distroless/static") || final.from == "scratch",
		"the final image has no toolchain or shell: %s", final.from)
	copies := strings.Join(final.all("COPY"), "\n")
	require.Contains(t, copies, "--from="+build.name)
	require.Contains(t, copies, "worker")
	require.Contains(t, copies, "enqueue")

	users := final.all("USER")
	require.NotEmpty(t, users, "the final stage sets USER")
	user, _, _ := strings.Cut(users[len(users)-1], ":")
	require.NotContains(t, []string{"root", "0", ""}, user, "runs as non-root")

	require.Contains(t, final.all("EXPOSE"), "9090")
	require.Equal(t, []string{`["` + dockerfileBinDir(t) + `worker"]`}, final.all("ENTRYPOINT"))
	for _, env := range final.all("ENV") {
		require.NotContains(t, env, "LEVEE_HTTP_ADDR", "the image binds nothing beyond loopback by itself; compose sets the address")
	}
}

func TestDockerignore(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	require.NoError(t, err)
	var patterns []string
	for l := range strings.Lines(string(b)) {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			patterns = append(patterns, l)
		}
	}
	require.Contains(t, patterns, ".git")
	require.Contains(t, patterns, ".levee", "dev mode's local NATS data stays out of the image")
	for _, p := range patterns {
		for _, needed := range []string{"go.mod", "go.sum", "migrations", "cmd", "internal"} {
			require.NotEqual(t, needed, strings.Trim(p, "/"), "the build needs %s", needed)
		}
	}
}

// flagValue returns the argument after flag in args, or "".
func flagValue(args []string, flag string) string {
	i := slices.Index(args, flag)
	if i < 0 || i+1 >= len(args) {
		return ""
	}
	return args[i+1]
}
