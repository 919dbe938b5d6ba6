// Package policy decides requests with OPA.
//
// An [Engine] loads Rego modules and JSON or YAML data from a directory, or
// the embedded default policy of package policies, compiles them and prepares
// the query data.custos.decision once per policy version. The prepared query
// lives in an atomic pointer: [Engine.Reload] (on a file change seen by
// [Engine.Watch], or on SIGHUP) builds a new one and swaps it in, and a
// policy that fails to load leaves the previous one serving.
//
// [Engine.Decide] never fails open. An undefined decision, an evaluation
// error, a timeout or a decision of the wrong shape is a denial whose reason
// starts with "policy error:". Every decision has a unique id, also when it
// comes from the decision cache, which holds SQL decisions keyed by
// everything of the input the default policy reads and is cleared on every
// reload.
//
// The input and the decision are documented for policy authors in
// policies/README.md.
package policy
