// Command funclen is a gate of `make check` (STYLE 14): it lists the functions longer than
// 60 lines and fails when one of them does not say, in its doc comment, why it is long
// ("Long on purpose: ..."). Test files are not checked.
//
//	go run ./internal/funclen [DIR]
package main

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

const limit = 60

func main() {
	root := "."
	if len(os.Args) > 1 {
		root = os.Args[1]
	}
	fset := token.NewFileSet()
	bad := 0
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, p, nil, parser.ParseComments)
		if err != nil {
			return err
		}
		for _, decl := range f.Decls {
			fd, ok := decl.(*ast.FuncDecl)
			if !ok || fd.Body == nil {
				continue
			}
			n := fset.Position(fd.End()).Line - fset.Position(fd.Pos()).Line
			if n <= limit || (fd.Doc != nil && strings.Contains(fd.Doc.Text(), "Long on purpose:")) {
				continue
			}
			bad++
			fmt.Printf("%s: %s is %d lines without a reason (add \"Long on purpose: ...\" to its doc comment, or split it)\n",
				fset.Position(fd.Pos()), fd.Name.Name, n)
		}
		return nil
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "funclen:", err)
		os.Exit(2)
	}
	if bad > 0 {
		os.Exit(1)
	}
}
