package jsonview_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/jsonview"
)

// Within the bounds, Indent writes what json.Indent does.
func TestIndentMatchesJSONIndent(t *testing.T) {
	t.Parallel()
	for _, doc := range []string{
		`{"a":1,"b":[1,2,{"c":"x, y: {z}"}],"d":{},"e":[],"f":"q\"uote\\\\","g":null}`,
		`[]`, `{}`, `"text"`, `42`, ` { "spaced" : [ 1 , 2 ] } `, `[[],[{}],{"a":[]}]`,
	} {
		var want bytes.Buffer
		require.NoError(t, json.Indent(&want, []byte(strings.TrimSpace(doc)), "  ", "  "))
		require.Equal(t, want.String(), jsonview.Indent([]byte(doc), "  ", "  "), doc)
	}
}

// Nesting past MaxDepth is written compact, so the text grows with the input, not with the
// square of its depth: an 8 KB payload of nested arrays was a 16 MB page.
func TestIndentIsBounded(t *testing.T) {
	t.Parallel()
	deep := strings.Repeat("[", 4000) + strings.Repeat("]", 4000)
	out := jsonview.Indent([]byte(deep), "", "  ")
	require.Less(t, len(out), 4*len(deep), "output %d bytes for %d", len(out), len(deep))
	require.Contains(t, out, strings.Repeat("[", 100), "the deep part is compact")

	var naive bytes.Buffer
	require.NoError(t, json.Indent(&naive, []byte(deep), "", "  "))
	require.Greater(t, naive.Len(), 1000*len(deep), "json.Indent alone is quadratic")

	big := `[` + strings.Repeat(`"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",`, 20000) + `1]`
	out = jsonview.Indent([]byte(big), "", "  ")
	require.LessOrEqual(t, len(out), jsonview.MaxBytes+100)
	require.Contains(t, out, "bytes not shown)")

	notJSON := strings.Repeat("x", jsonview.MaxBytes+10)
	require.Contains(t, jsonview.Indent([]byte(notJSON), "", "  "), "(10 of ")
}

func TestRedactHeaders(t *testing.T) {
	t.Parallel()
	in := `{"url":"https://x/","headers":{"Authorization":"Bearer a","cookie":"c","X-Api-Key":"k","X-Auth-Token":"t","X-Trace":"keep"},"body":1}`
	out := string(jsonview.RedactHeaders([]byte(in)))
	for _, secret := range []string{"Bearer a", `"c"`, `"k"`, `"t"`} {
		require.NotContains(t, out, secret)
	}
	require.Contains(t, out, `"X-Trace":"keep"`)
	require.Contains(t, out, `"body":1`)
	for _, same := range []string{`{"headers":{"X-Trace":"keep"}}`, `[1,2]`, `"text"`, `{"headers":"not a map"}`, `not json`} {
		require.Equal(t, same, string(jsonview.RedactHeaders([]byte(same))))
	}
}
