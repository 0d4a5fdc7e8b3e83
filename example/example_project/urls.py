import djp
from django.urls import path
from shop import views

urlpatterns = [
    path("", views.product_list, name="product-list"),
    path("products/<int:pk>/", views.product_detail, name="product-detail"),
] + djp.urlpatterns()
