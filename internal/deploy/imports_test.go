package deploy_test

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const module = "github.com/levee-dev/levee"

// The import direction of design rule 40: cmd → levee, admin, dashboard → internal/* →
// leveetype. No internal package imports a public one, and leveetype imports nothing of Levee.
func TestImportDirection(t *testing.T) {
	t.Parallel()
	public := map[string]bool{module: true, module + "/admin": true, module + "/dashboard": true}
	checked := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if rel == "bench" || strings.HasPrefix(d.Name(), ".") && rel != "." {
				return filepath.SkipDir // a module of its own, or tooling
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		internal := strings.HasPrefix(rel, "internal/")
		leaf := strings.HasPrefix(rel, "leveetype/")
		if !internal && !leaf {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		checked++
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if internal && public[p] {
				t.Errorf("%s imports %s: internal packages never import the public ones (design rule 40)", rel, p)
			}
			if leaf && (p == module || strings.HasPrefix(p, module+"/")) {
				t.Errorf("%s imports %s: leveetype imports nothing of Levee", rel, p)
			}
		}
		return nil
	})
	require.NoError(t, err)
	require.Greater(t, checked, 50, "the walk found the internal packages")
}
