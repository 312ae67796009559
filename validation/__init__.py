"""Studies that check the theory with numbers (grown in later issues)."""
