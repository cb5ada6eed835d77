"""SDXL text-to-image online service: one engine behind the platform, A1111 and OpenAI APIs."""
