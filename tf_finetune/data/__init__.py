"""Reading examples and turning them into tf.data pipelines."""
