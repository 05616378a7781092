"""What users run beside training: translate, evaluate, compare, sweep, export, convert, demo, download."""
