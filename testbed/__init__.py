"""Veda's video diffusion testbed: a small diffusers Wan transformer trained here on clips
synthesised from photographs bundled with scikit-image (see testbed/README.md)."""
