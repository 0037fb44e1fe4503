"""The "Supervision" section of the Django admin: a ``ModelAdmin`` of ``Actor`` whose URLs are
the pages of ``celery_supervise.contrib.pages`` (the tree, actors by type and status, one
actor, the actions). Every view goes through ``admin_site.admin_view``: an active staff
login, and Django's CSRF check on a POST."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.middleware.csrf import get_token
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.module_loading import import_string
from django.utils.safestring import mark_safe

from ...errors import SuperviseError
from ...supervision import Supervision
from .. import pages, render
from .models import CHANGE_PERMISSION, Actor

__all__ = ["SupervisionAdmin", "supervision"]


def supervision() -> Supervision:
    """The Supervision the pages show: ``SUPERVISION_ADMIN_CELERY_APP``'s, or the current app's."""
    dotted = getattr(settings, "SUPERVISION_ADMIN_CELERY_APP", None)
    if dotted is None:
        return Supervision.for_current_app()
    found = import_string(dotted)
    return found if isinstance(found, Supervision) else Supervision.for_app(found)


def _urls(prefix: str) -> render.Urls:
    """The admin's URL names: ``admin:<prefix>_changelist`` is the overview."""
    names = {"overview": "changelist"}
    return render.Urls(lambda page: reverse(f"admin:{prefix}_{names.get(page, page)}"))


View = Callable[..., HttpResponse]


class SupervisionAdmin(admin.ModelAdmin):  # type: ignore[misc]  # django has no type hints
    """Reading: any active staff user. Acting: ``celery_supervise.change_actor``."""

    def has_module_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_active and request.user.is_staff)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.has_module_permission(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_active and request.user.has_perm(CHANGE_PERMISSION))

    # -- URLs ----------------------------------------------------------------------------------
    @property
    def _prefix(self) -> str:
        return f"{self.opts.app_label}_{self.opts.model_name}"

    def get_urls(self) -> list[Any]:
        wrap = self.admin_site.admin_view
        return [
            path("", wrap(self.overview_view), name=f"{self._prefix}_changelist"),
            path("actors/", wrap(self.actors_view), name=f"{self._prefix}_actors"),
            path("actor/", wrap(self.actor_view), name=f"{self._prefix}_actor"),
            path("act/", wrap(self.act_view), name=f"{self._prefix}_act"),
        ]

    # -- views ---------------------------------------------------------------------------------
    def overview_view(self, request: HttpRequest) -> HttpResponse:
        return self._page(request, "Supervision tree", lambda sup, urls: render.overview_html(
            pages.overview(sup), urls))  # fmt: skip

    def actors_view(self, request: HttpRequest) -> HttpResponse:
        q = request.GET
        type_name = q.get("type", "")

        def body(sup: Supervision, urls: render.Urls) -> str:
            listed = pages.actor_list(
                sup,
                type_name,
                q.get("status") or None,
                cursor=_whole(q.get("cursor", "0"), "cursor"),
                limit=_whole(q.get("limit", str(pages.PAGE_SIZE)), "limit"),
            )
            return render.actor_list_html(listed, urls)

        return self._page(request, f"Actors of {type_name}", body)

    def actor_view(self, request: HttpRequest) -> HttpResponse:
        type_name, key = request.GET.get("type", ""), request.GET.get("key", "")
        actions = list(pages.ACTIONS) if self.has_change_permission(request) else []
        csrf = format_html('<input type="hidden" name="csrfmiddlewaretoken" value="{}">',
                           get_token(request))  # fmt: skip

        def body(sup: Supervision, urls: render.Urls) -> str:
            view = pages.actor_view(sup, type_name, key)
            return render.actor_html(view, urls, csrf_field=csrf, actions=actions)

        return self._page(request, f"{type_name}:{key}", body)

    def act_view(self, request: HttpRequest) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"], "an action is a POST from the actor's page")
        if not self.has_change_permission(request):
            return self._message(request, 403, "Not allowed", (
                f"Actions need the permission {CHANGE_PERMISSION} (Supervision | actor | Can "
                "resume, restart, requeue dead letters and roll back actors); ask an admin to "
                "grant it to your user or one of its groups."))  # fmt: skip
        form = request.POST
        type_name, key = form.get("type", ""), form.get("key", "")
        try:
            outcome = pages.perform(supervision(), type_name, key, form.get("action", ""), form)
        except SuperviseError as exc:
            return self._message(request, 503, "Not available", str(exc))
        (messages.success if outcome.ok else messages.error)(request, outcome.message)
        back = _urls(self._prefix).actor(type_name, key)
        return HttpResponseRedirect(back, status=303)

    # -- shared --------------------------------------------------------------------------------
    def _page(
        self, request: HttpRequest, title: str, body: Callable[[Supervision, render.Urls], str]
    ) -> HttpResponse:
        try:
            html = body(supervision(), _urls(self._prefix))
        except pages.NotFound as exc:
            return self._message(request, 404, "Not found", str(exc))
        except SuperviseError as exc:  # Redis down, not installed, corrupt data: say so
            return self._message(request, 503, "Not available", str(exc))
        return self._render(request, title, html)

    def _message(self, request: HttpRequest, status: int, title: str, text: str) -> HttpResponse:
        html = format_html('<div class="cs-page"><p class="cs-refusal">{}</p></div>', text)
        return self._render(request, title, html, status=status)

    def _render(
        self, request: HttpRequest, title: str, html: str, status: int = 200
    ) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "opts": self.opts,
            "body": mark_safe(html),  # render escapes every value it shows
            "cs_style": mark_safe(render.STYLE),  # a constant
        }
        return TemplateResponse(request, "celery_supervise/page.html", context, status=status)


def _whole(raw: str, what: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise pages.NotFound(f"{what} must be a whole number, got {raw!r}") from None


admin.site.register(Actor, SupervisionAdmin)
