package authn

// FailureMemoryLen is how many refusals v remembers.
func FailureMemoryLen(v *Verifier) int { return v.failures.len() }
