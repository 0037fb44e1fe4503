from django.contrib import admin
from django.urls import path

from . import views

urlpatterns = [
    # The Django admin, with celery_supervise's "Supervision" section.
    path("admin/", admin.site.urls),
    path("wallets/<str:key>/deposits", views.deposit, name="wallet-deposit"),
    path("wallets/<str:key>/payments", views.pay, name="wallet-pay"),
    path("wallets/<str:key>/balance", views.balance, name="wallet-balance"),
    path("wallets/<str:key>", views.wallet_snapshot, name="wallet-snapshot"),
    path("ledger", views.ledger_snapshot, name="ledger-snapshot"),
]
