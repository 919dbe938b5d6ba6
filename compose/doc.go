// Package compose holds the compose stack of custos (compose.yaml and the
// configuration files it mounts) and its tests: this machine-independent
// check parses compose.yaml, the Dockerfile and every mounted file, and
// validates each configuration with the loader its program uses (Envoy's
// protos, internal/config). stackinit/ is the stack's one-shot setup and
// health probe.
package compose
