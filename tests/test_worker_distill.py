"""A distillation job on a real qcluster worker, killed with -9 half-way: the rerun finishes with no duplicates.

The teacher is a local OpenAI-compatible server (a thread of this test process) that answers
slowly, so the worker is certainly in the middle of the job when it is killed.
"""
from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from datasets_app.models import QADataset, QAPair, RecipeCheckpoint, TeacherConfig
from domains.jobs import enqueue_job, reap_stale_jobs
from domains.models import Chunk, Document, Job

from .test_worker import LEASE, _job, _wait, cluster  # noqa: F401 - the fixture is used by name

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

ITEMS = ["差旅费", "会议费", "培训费", "劳务费", "专家咨询费", "办公用品", "图书资料", "印刷费", "邮电费", "维修费",
         "租赁费", "设备购置", "版面费", "测试化验费", "燃料费", "公务接待"]
CHUNKS = len(ITEMS)
DELAY = 0.4


class SlowTeacher(BaseHTTPRequestHandler):
    """Answers every chunk with one grounded pair about that chunk, after a pause."""

    calls: list[str] = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        user = body["messages"][-1]["content"]
        article = re.search(r"第(\d+)条", user).group(1)
        SlowTeacher.calls.append(article)
        time.sleep(DELAY)
        days = int(article) + 2
        content = json.dumps({"pairs": [{
            "question": f"{ITEMS[int(article) - 1]}的报销材料应在几个工作日内提交？",
            "answer": f"{days}个工作日内。",
            "evidence": f"{days}个工作日内提交",
        }]}, ensure_ascii=False)
        data = json.dumps({
            "id": "x", "object": "chat.completion", "created": 0, "model": "slow",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 30, "completion_tokens": 10, "total_tokens": 40},
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except BrokenPipeError:  # the worker asking was killed
            pass


@pytest.fixture
def teacher_server():
    SlowTeacher.calls = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), SlowTeacher)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


def test_killed_distillation_resumes_without_duplicates(cluster, teacher_server, domain, bob):  # noqa: F811
    _proc, log = cluster
    document = Document.objects.create(domain=domain, filename="材料提交规定.txt", content_hash="d" * 64,
                                       status=Document.Status.READY)
    for i in range(1, CHUNKS + 1):
        text = f"第{i}条 {ITEMS[i - 1]}的报销材料应当在{i + 2}个工作日内提交财务处。"
        Chunk.objects.create(domain=domain, document=document, ordinal=i, text=text, length=len(text),
                             heading_path=["材料提交规定"], content_hash=f"{i:064d}")
    dataset = QADataset.default_for(domain)
    teacher = TeacherConfig.objects.create(domain=domain, name="slow", provider="openai", model="slow",
                                           base_url=teacher_server, concurrency=1)
    job = enqueue_job(domain=domain, kind="distill_qa", params={"dataset_id": dataset.pk, "teacher_id": teacher.pk},
                      created_by=bob)

    running = _wait(lambda: (j := _job(job.pk)).status == Job.Status.RUNNING and j.progress_done >= 3 and j,
                    60, log, "the distillation to make progress")
    os.kill(int(running.worker.rsplit(":", 1)[1]), signal.SIGKILL)
    _wait(lambda: Job.objects.stale().filter(pk=job.pk).exists(), 5 * LEASE, log, "the lease to expire")
    kept = QAPair.objects.filter(dataset=dataset).count()
    assert 3 <= kept < CHUNKS  # work done before the kill is kept
    assert reap_stale_jobs()["requeued"] == 1

    done = _wait(lambda: _job(job.pk).is_finished and _job(job.pk), 120, log, "the requeued job to finish")
    assert done.status == Job.Status.SUCCEEDED, done.error
    assert done.attempts == 2 and f"{kept} already done" in done.log_tail
    questions = list(QAPair.objects.filter(dataset=dataset).values_list("question", flat=True))
    assert len(questions) == CHUNKS == len(set(questions))  # one pair per chunk, none twice
    assert RecipeCheckpoint.objects.filter(dataset=dataset, recipe="qa").count() == CHUNKS
    # The second attempt asked the teacher only for what was not saved (at most the unit in flight again).
    assert len(SlowTeacher.calls) <= CHUNKS + 1
    assert done.result["rows_total"] == CHUNKS
