"""Language switching: English by default, Simplified Chinese after set_language."""
from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import translation

from domains.jobs import enqueue_job
from domains.models import Job

pytestmark = pytest.mark.django_db


def switch(client, language, next_url="/"):
    return client.post(reverse("set_language"), {"language": language, "next": next_url})


def test_english_by_default_with_a_switcher(client_as, alice, domain):
    html = client_as(alice).get(reverse("home")).content.decode()
    assert '<html lang="en">' in html
    assert "My domains" in html and "Create a domain" in html
    assert f'action="{reverse("set_language")}" method="post"' in html
    assert 'value="zh-hans"' in html and "简体中文" in html


def test_switch_to_chinese_renders_chinese(client_as, alice, domain):
    client = client_as(alice)
    response = switch(client, "zh-hans", reverse("domain-dashboard", args=[domain.slug]))
    assert response.status_code == 302
    assert response["Location"] == reverse("domain-dashboard", args=[domain.slug])
    html = client.get(reverse("home")).content.decode()
    assert '<html lang="zh-hans">' in html
    assert "我的领域" in html and "创建领域" in html and "所有者" in html and "退出登录" in html
    assert "My domains" not in html
    dashboard = client.get(reverse("domain-dashboard", args=[domain.slug])).content.decode()
    assert "流水线" in dashboard and "依据文档作答" in dashboard and "文档" in dashboard
    switch(client, "en")
    assert "My domains" in client.get(reverse("home")).content.decode()


def test_job_pages_and_stored_messages_are_translated(client_as, bob, domain):
    job = enqueue_job(domain=domain, kind="selfcheck")  # message "Waiting for a worker", stored in English
    client = client_as(bob)
    switch(client, "zh-hans")
    html = client.get(job.get_absolute_url()).content.decode()
    assert "工作进程自检" in html  # the job kind label
    assert "排队中" in html  # the status choice label
    assert "等待工作进程" in html  # the stored message, translated on display
    assert "取消任务" in html
    listing = client.get(reverse("job-list", args=[domain.slug])).content.decode()
    assert "运行工作进程自检" in listing and "每步秒数" in listing
    Job.objects.filter(pk=job.pk).update(status=Job.Status.SUCCEEDED, message="Done")
    fragment = client.get(job.get_absolute_url(), HTTP_HX_REQUEST="true")
    assert fragment.status_code == 286
    assert "成功" in fragment.content.decode() and "完成" in fragment.content.decode()


def test_service_errors_are_translated(client_as, alice, domain):
    client = client_as(alice)
    switch(client, "zh-hans")
    response = client.post(reverse("home"), {"slug": "finance", "name": "x", "language": "zh"})
    assert "已存在使用此短名的领域。" in response.content.decode()
    me = domain.memberships.get(user=alice)
    response = client.post(reverse("member-remove", args=[domain.slug, me.pk]), follow=True)
    assert "一个领域至少需要一位所有者。" in response.content.decode()


def test_catalog_covers_model_and_job_strings():
    with translation.override("zh-hans"):
        assert str(Job.Status.RUNNING.label) == "运行中"
        assert translation.gettext("Step %(step)d of %(steps)d") % {"step": 1, "steps": 5} == "第 1 步，共 5 步"
        assert translation.gettext("Cancelling…") == "正在取消…"


def test_login_page_in_chinese(client):
    switch(client, "zh-hans", reverse("login"))
    html = client.get(reverse("login")).content.decode()
    assert "登录 VSM" in html


def test_the_chat_page_in_chinese(client_as, vera, domain):
    client = client_as(vera)
    switch(client, "zh-hans", reverse("chat", args=[domain.slug]))
    html = client.get(reverse("chat", args=[domain.slug])).content.decode()
    assert "新对话" in html and "还没有启用的模型" in html and "提问" in html
