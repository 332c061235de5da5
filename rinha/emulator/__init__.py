"""A stand-in for the contest's payment processor, exact to SPEC.md section 2."""
