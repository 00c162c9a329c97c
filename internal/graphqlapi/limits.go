package graphqlapi

import (
	"context"
	"fmt"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
)

// documentLimits is a gqlgen extension that refuses, before anything
// runs, an operation whose selections nest deeper than maxDepth or whose
// document has more aliased fields than maxAliases, and introspection
// when it is turned off. A limit of zero or less is off. (gqlgen's
// complexity limit, extension.FixedComplexityLimit, bounds the work of
// what remains.)
type documentLimits struct {
	maxDepth   int
	maxAliases int
}

var _ interface {
	graphql.HandlerExtension
	graphql.OperationContextMutator
} = documentLimits{}

// ExtensionName implements graphql.HandlerExtension.
func (documentLimits) ExtensionName() string { return "DocumentLimits" }

// Validate implements graphql.HandlerExtension.
func (documentLimits) Validate(graphql.ExecutableSchema) error { return nil }

// MutateOperationContext implements graphql.OperationContextMutator.
func (l documentLimits) MutateOperationContext(_ context.Context, oc *graphql.OperationContext) *gqlerror.Error {
	if oc.Operation == nil {
		return nil
	}
	if oc.DisableIntrospection && selectsIntrospection(oc.Operation.SelectionSet, map[string]bool{}) {
		return limitError(CodeIntrospectionDisabled, "introspection is turned off on this server (--graphql-introspection)")
	}
	if l.maxDepth > 0 {
		if d := depth(oc.Operation.SelectionSet, map[string]int{}); d > l.maxDepth {
			return limitError(CodeDepthLimit, fmt.Sprintf("the operation nests selections %d deep, past the limit of %d", d, l.maxDepth))
		}
	}
	if l.maxAliases > 0 {
		if n := aliases(oc.Doc); n > l.maxAliases {
			return limitError(CodeAliasLimit, fmt.Sprintf("the document has %d aliased fields, past the limit of %d", n, l.maxAliases))
		}
	}
	return nil
}

func limitError(code, msg string) *gqlerror.Error {
	return &gqlerror.Error{Message: msg, Extensions: map[string]any{CodeExtension: code}}
}

// depth is how deeply fields nest in set: a leaf field is 1. Fragments
// count as the fields they hold; each fragment's depth is computed once
// (memo), so a document of fragments that spread each other many times
// costs no more than its size.
func depth(set ast.SelectionSet, memo map[string]int) int {
	deepest := 0
	for _, sel := range set {
		var d int
		switch s := sel.(type) {
		case *ast.Field:
			d = 1 + depth(s.SelectionSet, memo)
		case *ast.InlineFragment:
			d = depth(s.SelectionSet, memo)
		case *ast.FragmentSpread:
			v, ok := memo[s.Name]
			if !ok {
				memo[s.Name] = 0 // validation refuses cycles; this stops one anyway
				if s.Definition != nil {
					v = depth(s.Definition.SelectionSet, memo)
				}
				memo[s.Name] = v
			}
			d = v
		}
		deepest = max(deepest, d)
	}
	return deepest
}

// aliases counts the fields of the document written with an alias other
// than their name, each where it is written (a fragment's once).
func aliases(doc *ast.QueryDocument) int {
	if doc == nil {
		return 0
	}
	n := 0
	var walk func(ast.SelectionSet)
	walk = func(set ast.SelectionSet) {
		for _, sel := range set {
			switch s := sel.(type) {
			case *ast.Field:
				if s.Alias != "" && s.Alias != s.Name {
					n++
				}
				walk(s.SelectionSet)
			case *ast.InlineFragment:
				walk(s.SelectionSet)
			}
		}
	}
	for _, op := range doc.Operations {
		walk(op.SelectionSet)
	}
	for _, f := range doc.Fragments {
		walk(f.SelectionSet)
	}
	return n
}

// selectsIntrospection reports whether set asks for __schema or __type
// (__typename is always allowed).
func selectsIntrospection(set ast.SelectionSet, seen map[string]bool) bool {
	for _, sel := range set {
		switch s := sel.(type) {
		case *ast.Field:
			if s.Name == "__schema" || s.Name == "__type" {
				return true
			}
		case *ast.InlineFragment:
			if selectsIntrospection(s.SelectionSet, seen) {
				return true
			}
		case *ast.FragmentSpread:
			if !seen[s.Name] && s.Definition != nil {
				seen[s.Name] = true
				if selectsIntrospection(s.Definition.SelectionSet, seen) {
					return true
				}
			}
		}
	}
	return false
}
