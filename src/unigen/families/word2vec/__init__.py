"""word2vec math (Mikolov et al. 2013a, 2013b; word2vec.c): pure functions of tensors.

    tables.py       word2vec.c's tables from the counts: sub-sampling keep probability, unigram^0.75 negative
                    table, Huffman tree (codes and inner-node points) for hierarchical softmax
    sgd.py          the batched training step: sub-sampling, shrinking windows, skip-gram and CBOW with negative
                    sampling and / or hierarchical softmax, word2vec.c's hand-written SGD updates, alpha decay
    similarity.py   cosine nearest neighbours, analogies by 3CosAdd and 3CosMul (Levy & Goldberg 2014)

The glue (network.py: config and vectors; task.py: the Task; evaluate.py: question sets, metrics, picture;
presets.py) is not imported here, so the math imports nothing of unigen but `unigen.errors`.
"""
