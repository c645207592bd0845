//go:build !unix

package main

// readUsage reports nothing where getrusage is missing: the bench then shows zero CPU and RSS.
func readUsage() procUsage { return procUsage{} }
