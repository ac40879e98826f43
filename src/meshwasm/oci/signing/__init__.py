"""Signed wasm images in cosign's key-based format: sign, verify, and the policy that requires it.

- :mod:`.payload`: the simple-signing payload and signature image (pure);
- :mod:`.keys`: cosign's key files (encrypted and plain) and ECDSA signatures (pure);
- :mod:`.remote`: signing and verifying in a registry through the OCI client;
- :mod:`.policy`: which images need a signature by which keys (pure), and the verifier that
  the wasmfetcher and the gateway agent call before a module is admitted to their caches.
"""
