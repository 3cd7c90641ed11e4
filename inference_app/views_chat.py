"""The chat pages: a domain's members (and, when the owner turns it on, anyone with the public
link) ask questions and get answers with citations, streamed as they are generated.

- ``/d/<slug>/chat/`` (and ``…/chat/<id>/``): conversations and one conversation. The form posts
  to ``…/chat/ask/``, which answers in one go and redirects (works without JavaScript);
  ``static/js/chat.js`` posts the same form to ``…/chat/stream/`` instead and shows the answer
  as it arrives (server-sent events), then swaps in the finished message.
- ``/d/<slug>/chat/messages/<id>/feedback/``: thumbs up/down and a correction (htmx).
- ``/d/<slug>/chat/settings/``: the deployment (owners).
- ``/p/<token>/``: the public chat of a domain whose owner turned the link on; a visitor's
  conversations are kept by session.
"""
from __future__ import annotations

import json
import time

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST, require_safe

from domains import access as gate
from domains import audit
from domains.forms import apply_errors
from domains.models import Role
from inference_app import serving
from inference_app.forms import AskForm, DeploymentForm, FeedbackForm
from inference_app.models import Conversation, Deployment, Message


class Place:
    """Where a chat request comes from: a member of the domain, or a visitor of its public link."""

    def __init__(self, request: HttpRequest, *, slug: str | None = None, token: str | None = None):
        self.request = request
        if token is not None:
            deployment = Deployment.objects.select_related("domain").filter(public=True, public_token=token).first()
            if deployment is None or not token:
                raise Http404("No such chat")
            self.domain, self.access, self.token = deployment.domain, None, token
            if not request.session.session_key:
                request.session.save()
            self.session_key = request.session.session_key
        else:
            self.access = gate.for_request(request, slug, min_role=Role.VIEWER)
            self.domain, self.token, self.session_key = self.access.domain, None, ""

    def conversations(self):
        qs = Conversation.objects.for_domain(self.domain)
        if self.access is not None:
            return qs.of(self.request.user)
        return qs.filter(user=None, session_key=self.session_key)

    def conversation(self, pk) -> Conversation | None:
        if pk in (None, ""):
            return None
        try:
            return get_object_or_404(self.conversations(), pk=int(pk))
        except (TypeError, ValueError):
            raise Http404("No such conversation") from None

    def url(self, name: str, *args) -> str:
        if self.token is not None:
            return reverse(f"public-{name}", args=[self.token, *args])
        return reverse(name, args=[self.domain.slug, *args])

    def new_conversation(self, title: str) -> Conversation:
        return serving.start_conversation(domain=self.domain, user=self.request.user if self.access else None,
                                          session_key=self.session_key, title=title)


def _context(place: Place, conversation: Conversation | None, form: AskForm | None = None, **extra) -> dict:
    deployment = serving.deployment_for(place.domain)
    version = serving.active_llm(place.domain)
    return {
        "domain": place.domain, "access": place.access, "section": "chat", "place": place,
        "conversation": conversation, "conversations": place.conversations()[:50],
        "chat_messages": conversation.messages.prefetch_related("feedback") if conversation else [],
        "form": form or AskForm(initial={"mode": deployment.mode}), "deployment": deployment,
        "version": version, "ask_url": place.url("chat-ask"), "stream_url": place.url("chat-stream"),
        "public_url": (place.request.build_absolute_uri(reverse("public-chat", args=[deployment.public_token]))
                       if deployment.public and deployment.public_token else ""),
        "settings_form": extra.pop("settings_form", None) or (
            DeploymentForm(instance=deployment) if place.access is not None and place.access.is_owner else None),
        **extra,
    }


def _page(request: HttpRequest, place: Place, pk=None, status: int = 200, **extra) -> HttpResponse:
    conversation = place.conversation(pk)
    return render(request, "inference/chat.html", _context(place, conversation, **extra), status=status)


@login_required
@require_safe
def chat_page(request: HttpRequest, slug: str, pk: int | None = None) -> HttpResponse:
    return _page(request, Place(request, slug=slug), pk)


@require_safe
def public_chat(request: HttpRequest, token: str, pk: int | None = None) -> HttpResponse:
    return _page(request, Place(request, token=token), pk)


def _ask(request: HttpRequest, place: Place) -> HttpResponse:
    form = AskForm(request.POST)
    if not form.is_valid():
        return render(request, "inference/chat.html",
                      _context(place, place.conversation(request.POST.get("conversation")), form), status=400)
    conversation = place.conversation(form.cleaned_data.get("conversation"))
    question = form.cleaned_data["question"]
    history = serving.history_of(conversation) if conversation else []
    started = time.perf_counter()
    answer = engine = None
    error = ""
    try:
        answer, engine = serving.ask(domain=place.domain, question=question, mode=form.cleaned_data["mode"] or None,
                                     history=history)
    except ValidationError as exc:
        apply_errors(form, exc)
        return render(request, "inference/chat.html", _context(place, conversation, form), status=400)
    except serving.ServingError as exc:
        error = str(exc)
    conversation = conversation or place.new_conversation(question)
    serving.record_turn(conversation=conversation, question=question, answer=answer, engine=engine,
                        seconds=time.perf_counter() - started, error=error)
    return redirect(place.url("chat-conversation", conversation.pk) + "#last")


@login_required
@require_POST
def chat_ask(request: HttpRequest, slug: str) -> HttpResponse:
    return _ask(request, Place(request, slug=slug))


@require_POST
def public_ask(request: HttpRequest, token: str) -> HttpResponse:
    return _ask(request, Place(request, token=token))


def _event(name: str, data) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def _stream(request: HttpRequest, place: Place) -> HttpResponse:
    form = AskForm(request.POST)
    if not form.is_valid():
        return HttpResponse(json.dumps({"errors": form.errors.get_json_data()}), status=400,
                            content_type="application/json")
    conversation = place.conversation(form.cleaned_data.get("conversation"))
    question = form.cleaned_data["question"]
    history = serving.history_of(conversation) if conversation else []
    started = time.perf_counter()
    try:
        events, engine = serving.stream(domain=place.domain, question=question,
                                        mode=form.cleaned_data["mode"] or None, history=history)
        failure = ""
    except ValidationError as exc:
        return HttpResponse(json.dumps({"errors": {"question": [{"message": m} for m in exc.messages]}}),
                            status=400, content_type="application/json")
    except serving.ServingError as exc:
        events, engine, failure = iter(()), None, str(exc)
    conversation = conversation or place.new_conversation(question)

    def body():
        from inference_app.engine.answering import Answer

        yield _event("conversation", {"id": conversation.pk, "url": place.url("chat-conversation", conversation.pk)})
        final, error = None, failure
        try:
            for event in events:
                if event["type"] == "citations":
                    yield _event("citations", {"covered": event["covered"], "count": len(event["citations"])})
                elif event["type"] == "token":
                    yield _event("token", {"text": event["text"]})
                elif event["type"] == "done":
                    final = Answer.from_dict(event["answer"])
        except Exception as exc:  # noqa: BLE001 - the page shows the error instead of a broken stream
            error = _("The answer failed: %(error)s") % {"error": exc}
        reply = serving.record_turn(conversation=conversation, question=question, answer=final, engine=engine,
                                    seconds=time.perf_counter() - started, error=error, endpoint="chat.stream")
        html = render_to_string("inference/_message.html",
                                {"m": reply, "place": place, "domain": place.domain, "last": True}, request=request)
        yield _event("done", {"html": html, "message_id": reply.pk, "covered": reply.covered, "error": error})

    response = StreamingHttpResponse(body(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


@login_required
@require_POST
def chat_stream(request: HttpRequest, slug: str) -> HttpResponse:
    return _stream(request, Place(request, slug=slug))


@require_POST
def public_stream(request: HttpRequest, token: str) -> HttpResponse:
    return _stream(request, Place(request, token=token))


def _feedback(request: HttpRequest, place: Place, pk: int) -> HttpResponse:
    message = get_object_or_404(Message.objects.filter(conversation__in=place.conversations(),
                                                       role=Message.Role.ASSISTANT), pk=pk)
    form = FeedbackForm(request.POST)
    status = 200
    if form.is_valid():
        try:
            serving.give_feedback(message=message, by=request.user, rating=form.cleaned_data["rating"],
                                  correction=form.cleaned_data["correction"])
        except ValidationError as exc:
            apply_errors(form, exc)
            status = 400
    else:
        status = 400
    if request.htmx:
        return render(request, "inference/_message.html",
                      {"m": message, "place": place, "domain": place.domain, "feedback_form": form}, status=status)
    if status == 200:
        messages.success(request, _("Thank you: your feedback was recorded."))
    return redirect(place.url("chat-conversation", message.conversation_id) + f"#m{message.pk}")


@login_required
@require_POST
def message_feedback(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    return _feedback(request, Place(request, slug=slug), pk)


@require_POST
def public_feedback(request: HttpRequest, token: str, pk: int) -> HttpResponse:
    return _feedback(request, Place(request, token=token), pk)


@login_required
@require_POST
def chat_settings(request: HttpRequest, slug: str) -> HttpResponse:
    place = Place(request, slug=slug)
    if not place.access.is_owner:
        gate.resolve(request.user, slug, min_role=Role.OWNER)  # raises 403 with the reason
    deployment = serving.deployment_for(place.domain)
    form = DeploymentForm(request.POST, instance=deployment)
    if not form.is_valid():
        return _page(request, place, settings_form=form, status=400)
    form.save()
    if form.changed_data:
        changed = [f for f in form.changed_data if f != "remote_key"] + (["remote key"] if "remote_key" in
                                                                         form.changed_data else [])
        audit.record(domain=place.domain, by=request.user, action="deployment.change", target=_("chat"),
                     summary=", ".join(changed), fields=changed, public=form.instance.public)
    messages.success(request, _("Chat settings saved."))
    return redirect(reverse("chat", args=[slug]))
