package leveetest

import "testing"

// containerPostgres and containerNATS would start services with testcontainers-go where the
// test variables are unset and a Docker engine answers. They return "" when no container can
// be had; see containers_docker.go.
var (
	containerPostgres = func(t testing.TB) string { return "" }
	containerNATS     = func(t testing.TB) string { return "" }
)
