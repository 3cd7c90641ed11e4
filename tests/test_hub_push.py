"""Pushing an export to a model hub: against a local HTTP server that speaks the Hugging Face Hub API and
records what it receives (no network). The owner's token is kept encrypted and never logged; the model
card comes from the version's lineage and evaluation."""
from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from domains.jobs import enqueue_job, run_job
from domains.models import AuditEvent, Job
from training_app.models import EvaluationRun, HubCredential, HubPush, ModelExport, ModelVersion

TOKEN = "hf_test_0123456789abcdefWXYZ"


class JsonHandler(BaseHTTPRequestHandler):
    def _reply(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class FakeHub(JsonHandler):
    """The endpoints huggingface_hub's create_repo and upload_folder call; every file goes inline."""

    requests: list = []
    refuse = False

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).requests.append((self.path, self.headers.get("Authorization"), body))
        base = f"http://127.0.0.1:{self.server.server_port}"
        if type(self).refuse:
            return self._reply(401, {"error": "Invalid credentials in Authorization header"})
        if self.path == "/api/repos/create":
            return self._reply(200, {"url": f"{base}/acme/finance-v1", "name": "acme/finance-v1"})
        if self.path == "/api/validate-yaml":
            return self._reply(200, {"errors": [], "warnings": []})
        if "/preupload/" in self.path:
            files = json.loads(body)["files"]
            return self._reply(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                               for f in files]})
        if "/commit/" in self.path:
            return self._reply(200, {"commitUrl": f"{base}/acme/finance-v1/commit/c0ffee", "commitOid": "c0ffee",
                                     "pullRequestUrl": None})
        return self._reply(404, {"error": "not found"})


@pytest.fixture
def hub(settings):
    FakeHub.requests, FakeHub.refuse = [], False
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings.VSM_HF_ENDPOINT = f"http://127.0.0.1:{server.server_port}"
    yield FakeHub
    server.shutdown()


@pytest.fixture
def export(domain, data_dir, bob):
    from datasets_app.models import QADataset
    from datasets_app.services import add_pair
    from datasets_app.versions import freeze_dataset

    dataset = QADataset.default_for(domain)
    add_pair(dataset=dataset, by=bob, question="报销时限？", answer="三十日内。", approve=True)
    frozen = freeze_dataset(dataset=dataset, by=bob, validation_fraction=0.0).version
    version = ModelVersion.objects.create(domain=domain, number=1, kind="sft", base_model="Qwen/Qwen2.5-0.5B",
                                          config={"method": "lora", "lora_r": 8, "learning_rate": 0.0002,
                                                  "epochs": 3}, metrics={"final_train_loss": 0.41},
                                          dataset_hash=frozen.content_hash)
    EvaluationRun.objects.create(domain=domain, model_version=version, dataset_version=frozen,
                                 results={"model_rag": {"accuracy": 0.62, "hallucination_rate": 0.08}},
                                 job=Job.objects.create(domain=domain, kind="evaluate", status="succeeded"))
    row = ModelExport.objects.create(domain=domain, model_version=version, merged=True, gguf_outtype="f16",
                                     quantize="", modelfile=False)
    folder = data_dir / "domains" / domain.slug / "exports" / str(row.pk)
    (folder / "merged").mkdir(parents=True)
    (folder / "merged" / "config.json").write_text('{"model_type": "qwen2"}')
    (folder / "merged" / "model.safetensors").write_bytes(b"\x08weights")
    (folder / "merged" / "vsm_merge.json").write_text('{"base": "/srv/private/path"}')  # stays on the server
    gguf = folder / "finance-v1-f16.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 60)
    job = enqueue_job(domain=domain, kind="export", params={"export_id": row.pk})
    Job.objects.filter(pk=job.pk).update(status="succeeded")
    ModelExport.objects.filter(pk=row.pk).update(
        job=job, output_path=str(folder.relative_to(data_dir)),
        files={"gguf": {"name": gguf.name, "path": str(gguf.relative_to(data_dir)), "bytes": 64, "sha256": ""}})
    return ModelExport.objects.get(pk=row.pk)


def _commit_files(requests) -> dict:
    (_path, _auth, body), = [r for r in requests if "/commit/" in r[0]]
    out = {}
    for line in body.decode().splitlines():
        item = json.loads(line)
        if item["key"] == "file":
            out[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
    return out


def test_an_owner_pushes_an_export_with_a_model_card(domain, alice, export, hub, client_as, sent):
    response = client_as(alice).post(f"/d/{domain.slug}/exports/{export.pk}/push/",
                                     {"repo_id": "acme/finance-v1", "token": TOKEN, "private": "on"})
    assert response.status_code == 302
    push = HubPush.objects.get(export=export)
    run_job(push.job.pk)
    job = Job.objects.get(pk=push.job.pk)
    assert job.status == Job.Status.SUCCEEDED, job.error + job.log_tail
    # the hub saw the owner's token, a private repository and one commit with every file and the card
    assert {auth for _p, auth, _b in hub.requests} == {f"Bearer {TOKEN}"}
    create = next(json.loads(b) for p, _a, b in hub.requests if p == "/api/repos/create")
    assert {k: create[k] for k in ("name", "organization", "visibility")} == \
        {"name": "finance-v1", "organization": "acme", "visibility": "private"}
    files = _commit_files(hub.requests)
    assert set(files) == {"README.md", "config.json", "model.safetensors", "finance-v1-f16.gguf"}
    assert files["model.safetensors"] == b"\x08weights" and files["finance-v1-f16.gguf"].startswith(b"GGUF")
    card = files["README.md"].decode()
    assert card.startswith("---\nlibrary_name: transformers\nbase_model: Qwen/Qwen2.5-0.5B\n")
    assert "| model_rag | 0.620 | 0.080 |" in card and "| lora_r | 8 |" in card and "finance-v1-f16.gguf" in card
    assert f"v1 (`{export.model_version.dataset_hash[:12]}`" in card
    push.refresh_from_db()
    assert push.commit == "c0ffee" and push.url.endswith("/commit/c0ffee") and push.card == card
    # the token is encrypted at rest and appears in no log, job row or audit event
    credential = HubCredential.objects.get(domain=domain)
    assert TOKEN not in credential.token_encrypted and credential.fingerprint == "WXYZ"
    assert TOKEN not in job.log_tail + json.dumps(job.result) + json.dumps(
        list(AuditEvent.objects.values("summary", "data")), default=str)
    page = client_as(alice).get(f"/d/{domain.slug}/models/{export.model_version_id}/").content.decode()
    assert 'data-push="%d"' % push.pk in page and "saved for huggingface: …WXYZ" in page

    # the next push reuses the stored token
    hub.requests.clear()
    client_as(alice).post(f"/d/{domain.slug}/exports/{export.pk}/push/", {"repo_id": "acme/finance-v1"})
    second = HubPush.objects.exclude(pk=push.pk).get()
    run_job(second.job.pk)
    assert Job.objects.get(pk=second.job.pk).status == Job.Status.SUCCEEDED
    assert hub.requests and all(auth == f"Bearer {TOKEN}" for _p, auth, _b in hub.requests)


def test_a_refused_token_fails_the_job_clearly_without_the_token(domain, alice, export, hub, client_as, sent):
    hub.refuse = True
    client_as(alice).post(f"/d/{domain.slug}/exports/{export.pk}/push/", {"repo_id": "acme/finance-v1",
                                                                          "token": TOKEN})
    push = HubPush.objects.get()
    run_job(push.job.pk)
    job = Job.objects.get(pk=push.job.pk)
    assert job.status == Job.Status.FAILED and "refused the push to acme/finance-v1" in job.error
    assert "401" in job.error and TOKEN not in job.error + job.log_tail


def test_bad_pushes_are_refused_before_queuing(domain, alice, bob, export, hub, client_as, sent):
    owner = client_as(alice)
    for data, message in (({"repo_id": "no-slash", "token": TOKEN}, "owner/name"),
                          ({"repo_id": "acme/../etc", "token": TOKEN}, "owner/name"),
                          ({"repo_id": "acme/x"}, "access token")):
        response = owner.post(f"/d/{domain.slug}/exports/{export.pk}/push/", data, follow=True)
        assert message in response.content.decode()
    assert client_as(bob).post(f"/d/{domain.slug}/exports/{export.pk}/push/",
                               {"repo_id": "acme/x", "token": TOKEN}).status_code == 403  # owners only
    Job.objects.filter(pk=export.job_id).update(status="running")
    response = client_as(alice).post(f"/d/{domain.slug}/exports/{export.pk}/push/", {"repo_id": "acme/x", "token": TOKEN},
                          follow=True)
    assert "Only a finished export" in response.content.decode()
    assert not HubPush.objects.exists() and not HubCredential.objects.exists() and hub.requests == []


MS_TOKEN = "ms-0123456789abcdef-QRST"


class FakeModelScope(JsonHandler):
    """The endpoints ``modelscope``'s create_repo and upload_folder call: repository creation, the LFS
    batch that hands out upload URLs for large files, the blob PUTs and the commit (small files inline)."""

    requests: list = []
    blobs: dict = {}
    refuse = False

    def _any(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        cls = type(self)
        cls.requests.append((self.command, self.path, self.headers.get("Authorization"), body))
        if cls.refuse:
            return self._reply(401, {"Code": 10010205001, "Message": "Invalid token", "Success": False})
        base = f"http://127.0.0.1:{self.server.server_port}"
        if self.command == "POST" and self.path == "/api/v1/models":
            if any(m == "POST" and p == self.path for m, p, _a, _b in cls.requests[:-1]):
                return self._reply(400, {"Code": 10010205001, "Message": "repo already exists", "Success": False})
            return self._reply(200, {"Code": 200, "Success": True, "Data": {}})
        if self.path.endswith("/info/lfs/objects/batch"):
            objects = json.loads(body)["objects"]
            return self._reply(200, {"Code": 200, "Success": True, "Data": {"objects": [
                {"oid": o["oid"], "size": o["size"], "actions": {"upload": {"href": f"{base}/lfs/{o['oid']}"}}}
                for o in objects]}})
        if self.command == "PUT" and self.path.startswith("/lfs/"):
            cls.blobs[self.path.rsplit("/", 1)[1]] = body
            return self._reply(200, {"Code": 200, "Success": True})
        if self.path == "/api/v1/repos/models/acme/finance-v1/commit/master":
            return self._reply(200, {"Code": 200, "Success": True, "Data": {"CommitId": "5ca1ab1e"}})
        return self._reply(404, {"Code": 404, "Message": f"no {self.path}", "Success": False})

    do_GET = do_POST = do_PUT = _any


@pytest.fixture
def modelscope(settings):
    FakeModelScope.requests, FakeModelScope.blobs, FakeModelScope.refuse = [], {}, False
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeModelScope)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings.VSM_MODELSCOPE_ENDPOINT = f"http://127.0.0.1:{server.server_port}"
    settings.VSM_HF_ENDPOINT = "http://127.0.0.1:9"  # nothing may go to the other hub
    yield FakeModelScope
    server.shutdown()


def test_an_owner_pushes_an_export_to_modelscope(domain, alice, export, modelscope, client_as, sent, settings):
    import hashlib

    response = client_as(alice).post(f"/d/{domain.slug}/exports/{export.pk}/push/",
                                     {"hub": "modelscope", "repo_id": "acme/finance-v1", "token": MS_TOKEN,
                                      "private": "on"})
    assert response.status_code == 302
    push = HubPush.objects.get(export=export)
    assert push.hub == "modelscope"
    run_job(push.job.pk)
    job = Job.objects.get(pk=push.job.pk)
    assert job.status == Job.Status.SUCCEEDED, job.error + job.log_tail
    # a private repository was created first, with the owner's token on every request
    create = json.loads(next(b for m, p, _a, b in modelscope.requests if p == "/api/v1/models"))
    assert {k: create[k] for k in ("Path", "Name", "Visibility")} == {"Path": "acme", "Name": "finance-v1",
                                                                      "Visibility": 1}
    assert {auth for _m, _p, auth, _b in modelscope.requests} == {f"Bearer {MS_TOKEN}"}
    # weights went as blobs named by their sha256, small files inline, all in one commit
    (commit,) = [json.loads(b) for m, p, _a, b in modelscope.requests if p.endswith("/commit/master")]
    actions = {a["path"]: a for a in commit["actions"]}
    assert set(actions) == {"README.md", "config.json", "model.safetensors", "finance-v1-f16.gguf"}
    assert actions["model.safetensors"]["type"] == "lfs" and actions["config.json"]["type"] == "normal"
    for name, content in (("model.safetensors", b"\x08weights"), ("finance-v1-f16.gguf", b"GGUF" + b"\0" * 60),
                          ("config.json", b'{"model_type": "qwen2"}')):
        if actions[name]["type"] == "lfs":
            assert actions[name]["sha256"] == hashlib.sha256(content).hexdigest()
            assert modelscope.blobs[actions[name]["sha256"]] == content
        else:
            assert base64.b64decode(actions[name]["content"]) == content
    card = base64.b64decode(actions["README.md"]["content"]).decode()
    assert "frameworks:\n- pytorch\ntasks:\n- text-generation\n" in card and "| model_rag | 0.620 | 0.080 |" in card
    push.refresh_from_db()
    assert push.commit == "5ca1ab1e" and push.url == f"{settings.VSM_MODELSCOPE_ENDPOINT}/models/acme/finance-v1"
    assert push.card == card
    credential = HubCredential.objects.get(domain=domain, hub="modelscope")
    assert credential.fingerprint == "QRST" and MS_TOKEN not in credential.token_encrypted
    assert MS_TOKEN not in job.log_tail + json.dumps(job.result)
    page = client_as(alice).get(f"/d/{domain.slug}/models/{export.model_version_id}/").content.decode()
    assert 'data-hub="modelscope"' in page and "saved for modelscope: …QRST" in page


def test_modelscope_refusing_the_token_fails_the_job_clearly(domain, alice, export, modelscope, client_as, sent):
    modelscope.refuse = True
    client_as(alice).post(f"/d/{domain.slug}/exports/{export.pk}/push/",
                          {"hub": "modelscope", "repo_id": "acme/finance-v1", "token": MS_TOKEN})
    push = HubPush.objects.get()
    run_job(push.job.pk)
    job = Job.objects.get(pk=push.job.pk)
    assert job.status == Job.Status.FAILED
    assert "refused the push to acme/finance-v1" in job.error and "Invalid token" in job.error
    assert "401" in job.error and MS_TOKEN not in job.error + job.log_tail


def test_an_unknown_hub_is_refused_before_queuing(domain, alice, export, client_as, sent):
    response = client_as(alice).post(f"/d/{domain.slug}/exports/{export.pk}/push/",
                                     {"hub": "gitee", "repo_id": "acme/x", "token": MS_TOKEN}, follow=True)
    assert "Pushing to gitee is not supported" in response.content.decode()
    assert not HubPush.objects.exists() and not HubCredential.objects.exists()
