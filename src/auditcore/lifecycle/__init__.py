"""The data lifecycle: retention and archives, erasure of personal data (crypto-shredding)."""
