"""Fine-tuning: choosing the final models from the search's front (:mod:`.select`), training each
one from its inherited weights (:mod:`.tune`), and the record each fine-tuned model leaves
(:mod:`.records`), which the report reads."""
