"""Inference on a user's images with a saved model: ``scalenas predict`` (:mod:`.cli`), batching,
padding and pose crops (:mod:`.batch`), and drawing the predictions (:mod:`.predict`)."""
