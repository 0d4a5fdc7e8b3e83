from django.urls import path

from bench.page import views

urlpatterns = [
    path("ping", views.ping),
    path("authors/<int:k>/", views.author_page),
    path("books/<int:k>/", views.book_page),
]
