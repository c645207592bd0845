package queue_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/queue"
)

func TestValidateNamespace(t *testing.T) {
	t.Parallel()
	tests := []struct {
		ns string
		ok bool
	}{
		{"levee", true},
		{"a", true},
		{"t0123456789", true},
		{"my_ns_2", true},
		{"a" + strings.Repeat("b", 39), true},
		{"a" + strings.Repeat("b", 40), false},
		{"", false},
		{"Levee", false},
		{"1levee", false},
		{"_levee", false},
		{"le-vee", false},
		{"le.vee", false},
		{"le vee", false},
		{"levée", false},
	}
	for _, tt := range tests {
		t.Run(tt.ns, func(t *testing.T) {
			t.Parallel()
			err := queue.ValidateNamespace(tt.ns)
			if tt.ok {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			require.Contains(t, err.Error(), "namespace")
			_, err = queue.NewNames(tt.ns)
			require.Error(t, err, "NewNames must refuse what ValidateNamespace refuses")
		})
	}
}

func TestValidateKind(t *testing.T) {
	t.Parallel()
	tests := []struct {
		kind string
		ok   bool
	}{
		{"charge", true},
		{"http", true},
		{"0day", true},
		{"send-email", true},
		{"send_email_v2", true},
		{strings.Repeat("k", 64), true},
		{strings.Repeat("k", 65), false},
		{"", false},
		{"-charge", false},
		{"_charge", false},
		{"Charge", false},
		{"char.ge", false},
		{"char*", false},
		{"char>", false},
		{"char ge", false},
	}
	for _, tt := range tests {
		t.Run(tt.kind, func(t *testing.T) {
			t.Parallel()
			err := queue.ValidateKind(tt.kind)
			if tt.ok {
				require.NoError(t, err)
			} else {
				require.Error(t, err)
				require.Contains(t, err.Error(), "kind")
			}
		})
	}
}

func TestValidateID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, id string
		ok       bool
	}{
		{"ulid", "01J9ZQ8Q7K3W5X2Y4Z6A8B0C1D", true},
		{"punctuation", "order-42_a:b@c!#", true},
		{"max length", strings.Repeat("x", queue.MaxIDLen), true},
		{"too long", strings.Repeat("x", queue.MaxIDLen+1), false},
		{"empty", "", false},
		{"dot", "a.b", false},
		{"star", "a*", false},
		{"gt", "a>", false},
		{"space", "a b", false},
		{"tab", "a\tb", false},
		{"newline", "a\nb", false},
		{"del", "a\x7fb", false},
		{"leading space", " order-42", false},
		{"trailing space", "order-42 ", false},
		{"non ascii", "caf\u00e9", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := queue.ValidateID(tt.id)
			if tt.ok {
				require.NoError(t, err)
			} else {
				require.Error(t, err)
				require.Contains(t, err.Error(), "job id")
			}
		})
	}
}

func TestValidateKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, key string
		ok        bool
	}{
		{"simple", "order-42", true},
		{"spaces and dots allowed", "customer 7. order 42", true},
		{"unicode allowed", "café-42", true},
		{"max length", strings.Repeat("k", queue.MaxKeyLen), true},
		{"too long", strings.Repeat("k", queue.MaxKeyLen+1), false},
		{"empty", "", false},
		{"newline", "a\nb", false},
		{"carriage return", "a\rb", false},
		{"nul", "a\x00b", false},
		{"del", "a\x7fb", false},
		{"leading space", " order-42", false},
		{"trailing space", "order-42 ", false},
		{"invalid UTF-8", "order-\xff42", false},
		{"cut UTF-8", "caf\xc3", false},
		{"surrogate half", "a\xed\xa0\x80b", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := queue.ValidateKey(tt.key)
			if tt.ok {
				require.NoError(t, err)
			} else {
				require.Error(t, err)
				require.Contains(t, err.Error(), "idempotency key")
			}
		})
	}
}

func TestNames(t *testing.T) {
	t.Parallel()
	tests := []struct {
		ns                                 string
		jobsStream, dlqStream              string
		jobSubject, jobsSubjects, kindFilt string
		anyKind, dlqSubject, dlqSubjects   string
		consumer                           string
	}{
		{
			ns:         "levee",
			jobsStream: "LEVEE_JOBS", dlqStream: "LEVEE_DLQ",
			jobSubject: "levee.jobs.charge.J1", jobsSubjects: "levee.jobs.>", kindFilt: "levee.jobs.charge.*",
			anyKind: "levee.jobs.*.J1", dlqSubject: "levee.dlq.charge.J1", dlqSubjects: "levee.dlq.>",
			consumer: "levee_charge",
		},
		{
			ns:         "billing_2",
			jobsStream: "BILLING_2_JOBS", dlqStream: "BILLING_2_DLQ",
			jobSubject: "billing_2.jobs.charge.J1", jobsSubjects: "billing_2.jobs.>", kindFilt: "billing_2.jobs.charge.*",
			anyKind: "billing_2.jobs.*.J1", dlqSubject: "billing_2.dlq.charge.J1", dlqSubjects: "billing_2.dlq.>",
			consumer: "billing_2_charge",
		},
	}
	for _, tt := range tests {
		t.Run(tt.ns, func(t *testing.T) {
			t.Parallel()
			n, err := queue.NewNames(tt.ns)
			require.NoError(t, err)
			require.Equal(t, tt.ns, n.Namespace())
			require.Equal(t, tt.jobsStream, n.JobsStream())
			require.Equal(t, tt.dlqStream, n.DLQStream())
			require.Equal(t, tt.jobSubject, n.JobSubject("charge", "J1"))
			require.Equal(t, tt.jobsSubjects, n.JobsSubjects())
			require.Equal(t, tt.kindFilt, n.KindFilter("charge"))
			require.Equal(t, tt.anyKind, n.AnyKindSubject("J1"))
			require.Equal(t, tt.dlqSubject, n.DLQSubject("charge", "J1"))
			require.Equal(t, tt.dlqSubjects, n.DLQSubjects())
			require.Equal(t, tt.consumer, n.Consumer("charge"))
		})
	}
}

func TestDLQMsgID(t *testing.T) {
	t.Parallel()
	require.Equal(t, "dlq:J1:42", queue.DLQMsgID("J1", 42))
}

func TestServerAtLeast(t *testing.T) {
	t.Parallel()
	tests := []struct {
		version string
		want    bool
	}{
		{"2.9.10", false},
		{"2.10.3", false},
		{"2.10.4", true},
		{"2.10.22", true},
		{"2.11.0-beta", true},
		{"2.11.0", true},
		{"3.0.0", true},
		{"1.99.99", false},
		{"2.10", false},
		{"2.10.4-RC.1", true},
		{"garbage", false},
		{"", false},
	}
	for _, tt := range tests {
		t.Run(tt.version, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, queue.ServerAtLeast(tt.version, 2, 10, 4))
		})
	}
}

func TestBoundedID(t *testing.T) {
	t.Parallel()
	require.Equal(t, "01JD2Q", queue.BoundedID("01JD2Q"))
	long := strings.Repeat("x", 3500)
	b := queue.BoundedID(long)
	require.NoError(t, queue.ValidateID(b))
	require.Equal(t, b, queue.BoundedID(long), "the same id has the same stand-in")
	require.NotEqual(t, b, queue.BoundedID(long+"y"))
	require.NoError(t, queue.ValidateID(queue.BoundedID("bad id")))
}
