module github.com/tokenorchestrator/tokenorchestrator/client

// The client is a module of its own so that a program that imports it gets
// the standard library only, not the server's dependencies. The lowest Go
// it can ask of its users is 1.26: its examples use new(expression).
go 1.26.0
