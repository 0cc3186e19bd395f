"""Label agreement: do a feature's top words (found through the text tower) describe its top images?
(an `evaluate` shell over `modeling_sparse_clip.evaluation.labels`)."""

from modeling_sparse_clip.evaluation import labels
from modeling_sparse_clip.evaluation import metric_shell  # the module, not its class: evaluate takes the first Metric class it finds
from modeling_sparse_clip.evaluation.metric_inputs import embeddings_from_matrix, embeddings_from_rows

_KWARGS_DESCRIPTION = """
Args:
    image_indices / image_values (`list[list[int|float]]`): per image, the model's sparse activations.
    image_reference_embeddings (`list[list[float]]`): per image, its embedding in the reference text space.
    word_activations (`[V, W]` array, torch tensor or scipy sparse matrix): the model's activations of
        each vocabulary word (text tower).
    word_embeddings (`[V, d]` array): each vocabulary word embedded by the reference text encoder.
    words (`list[str]`, optional): the vocabulary, to return example labels.
    top_images (`int`, default 10), num_random_words (`int`, default 100), tau (`float`, default
        0.001), n_min (`int`, default 2), seed (`int`, default 0), num_examples (`int`, default 10).
Returns:
    `label_agreement`, `label_top1`, `top1_chance`, `label_specificity`, `top_word_similarity`, `random_word_similarity`,
    `num_labelled_features`, `num_unlabelled_features`, and `examples` ({feature: word} for the
    most frequently firing labelled features) when `words` is given.
Examples:
    >>> metric = modeling_sparse_clip.evaluation.load_metric("label_agreement")
    >>> metric.compute(image_indices=[[0], [0]], image_values=[[1.0], [1.0]],
    ...     image_reference_embeddings=[[1.0, 0.0], [1.0, 0.1]],
    ...     word_activations=np.array([[1.0], [0.0]]), word_embeddings=np.array([[1.0, 0.0], [0.0, 1.0]]),
    ...     num_random_words=1)["label_agreement"]
    1.0
"""


class LabelAgreement(metric_shell.SparseMetric):
    task = labels
    inputs = {**metric_shell.sparse_rows("image"), **metric_shell.dense_rows("image_reference_embeddings")}
    inputs_description = _KWARGS_DESCRIPTION

    def _compute(self, image_indices, image_values, image_reference_embeddings, word_activations=None, word_embeddings=None, words=None,
                 top_images=10, num_random_words=100, tau=0.001, n_min=2, seed=0, num_examples=10, chunk_size=512):
        if word_activations is None or word_embeddings is None:
            raise ValueError("Pass word_activations= (the model's [V, W] activations of the vocabulary) and "
                             "word_embeddings= (the reference text encoder's [V, d] embeddings of the same words).")
        word_activations = embeddings_from_matrix(word_activations)
        images = embeddings_from_rows(image_indices, image_values, word_activations.width)
        return labels.evaluate(images, image_reference_embeddings, word_activations, word_embeddings, words=words, top_images=top_images,
                               num_random_words=num_random_words, tau=tau, n_min=n_min, seed=seed, num_examples=num_examples,
                               chunk_size=chunk_size)
