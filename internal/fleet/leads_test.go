package fleet_test

import (
	"testing"

	"github.com/levee-dev/levee/internal/leveetest"
	"github.com/stretchr/testify/require"
)

// One worker of the fleet leads each kind, and one the whole fleet: the live worker with the
// smallest id (design rule 6's sweep and the DLQ depth metric run there).
func TestFleetLeads(t *testing.T) {
	t.Parallel()
	for _, srv := range leveetest.PrivateServers(t) {
		t.Run(srv.Name, func(t *testing.T) {
			t.Parallel()
			q := fleetQueue(t, srv.URL)
			b := join(t, q, fleetConfig("w-b", "a"))
			a := join(t, q, fleetConfig("w-a", "b"))
			c := join(t, q, fleetConfig("w-c", "a", "b"))
			stopA := run(t, a)
			run(t, b)
			run(t, c)
			requireFleet(t, q, map[string][]string{"a": {"w-b", "w-c"}, "b": {"w-a", "w-c"}})
			require.Eventually(t, func() bool {
				return b.Leads("a") && !c.Leads("a") && a.Leads("b") && !c.Leads("b") &&
					a.Leads("") && !b.Leads("") && !c.Leads("")
			}, fleetSeen, 10*fleetRefresh/100)

			stopA() // a leaves the fleet (its keys are deleted)
			require.Eventually(t, func() bool { return c.Leads("b") && b.Leads("") && !c.Leads("") },
				fleetSeen, 10*fleetRefresh/100, "the next smallest takes over")
		})
	}
}
