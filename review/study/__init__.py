"""The running study: trials, served copies, blinding design, reveals, identity, settings and the review desk."""
