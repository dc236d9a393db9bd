"""The pipeline run three ways (federated, centralized, local-only) and the non-learned floor."""
