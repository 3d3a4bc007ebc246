"""The learned dt: features, the network and its policy, the band loss, one training attempt,
replay, the rollout objective, the training trajectory and the trainer of an epoch; and the
learned time transformation of ``integrator_mode = "ml_ttl"`` with its TTL rollout objective and
trainer."""
