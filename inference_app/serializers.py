"""Serializers of the retrieval API: the domain's index, hit testing and embedding-model comparisons."""
from __future__ import annotations

from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from domains.serializers import JobDetailSerializer
from inference_app.models import EmbeddingComparison, RetrievalIndex
from inference_app.services import MAX_CANDIDATES, MAX_K, MAX_QUERY_CHARS


class RetrievalIndexSerializer(serializers.ModelSerializer):
    """The index: which embedding model built it, how many chunks it holds, the fusion weights chosen."""

    job = JobDetailSerializer(read_only=True, allow_null=True)
    model_version = serializers.SlugRelatedField(slug_field="number", read_only=True, allow_null=True,
                                                 help_text=_("Number of the embedding model version it was built "
                                                             "with; null for the base model."))
    is_built = serializers.BooleanField(read_only=True)

    class Meta:
        model = RetrievalIndex
        fields = ["encoder", "dense_enabled", "reranker", "built_encoder", "model_version", "is_built", "passages", "dim",
                  "fusion", "fusion_table", "fusion_queries", "stale", "built_at", "job"]
        read_only_fields = [f for f in fields if f not in ("encoder", "dense_enabled", "reranker")]


class RetrievalSettingsSerializer(serializers.Serializer):
    encoder = serializers.CharField(required=False, max_length=500,
                                    help_text=_("embedded:all-minilm-l6-v2, a local folder or a Hugging Face id."))
    dense_enabled = serializers.BooleanField(required=False, help_text=_("false: BM25 only."))
    reranker = serializers.CharField(required=False, allow_blank=True, max_length=500,
                                     help_text=_("A local cross-encoder folder re-scoring the top hybrid hits; "
                                                 "empty to turn it off."))


class HitSerializer(serializers.Serializer):
    rank = serializers.IntegerField()
    score = serializers.FloatField()
    chunk_id = serializers.IntegerField()
    document_id = serializers.IntegerField(allow_null=True)
    document = serializers.CharField()
    page = serializers.IntegerField(allow_null=True)
    heading = serializers.CharField()
    text = serializers.CharField()
    current = serializers.BooleanField(help_text=_("false: the chunk changed since the index was built"))


class SearchResultsSerializer(serializers.Serializer):
    bm25 = HitSerializer(many=True, required=False)
    dense = HitSerializer(many=True, required=False)
    hybrid = HitSerializer(many=True, required=False)


class SearchSerializer(serializers.Serializer):
    query = serializers.CharField()
    k = serializers.IntegerField()
    results = SearchResultsSerializer()
    weights = serializers.DictField(help_text=_("the fusion weights hybrid used: bm25, dense, rrf_k"))
    encoder = serializers.CharField()
    stale = serializers.BooleanField()
    reranker = serializers.CharField(help_text=_("the cross-encoder that re-scored the hybrid hits, if any"))


class SearchQuerySerializer(serializers.Serializer):
    q = serializers.CharField(max_length=MAX_QUERY_CHARS, help_text=_("The query."))
    k = serializers.IntegerField(default=5, min_value=1, max_value=MAX_K)
    methods = serializers.CharField(default="bm25,dense,hybrid",
                                    help_text=_("Comma-separated: bm25, dense, hybrid."))


class EmbeddingComparisonSerializer(serializers.ModelSerializer):
    job = JobDetailSerializer(read_only=True, allow_null=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = EmbeddingComparison
        fields = ["id", "candidates", "results", "queries", "passages", "job", "created_by", "created_at"]
        read_only_fields = fields


class EmbeddingComparisonStartSerializer(serializers.Serializer):
    candidates = serializers.ListField(
        child=serializers.CharField(max_length=500), min_length=1, max_length=MAX_CANDIDATES,
        help_text=_("Embedding models: embedded:all-minilm-l6-v2, a local folder, a Hugging Face id, or model:<n> "
                    "for an embedding model version of this domain."))
