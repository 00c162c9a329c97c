// Package e2e holds Drover's black-box tests: they build the real drover
// binary once, run it as users and operators do (flags, environment
// variables, signals) and talk to it only over HTTP, its exit status and
// its output.
package e2e
