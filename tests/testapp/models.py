import uuid

from django.db import models


class Author(models.Model):
    name = models.CharField(max_length=100)
    age = models.IntegerField(default=30)

    def __str__(self):
        return self.name


class Tag(models.Model):
    name = models.CharField(max_length=50, unique=True)


class Book(models.Model):
    title = models.CharField(max_length=200)
    author = models.ForeignKey(Author, on_delete=models.CASCADE, related_name="books")
    editor = models.ForeignKey(
        Author, null=True, blank=True, on_delete=models.SET_NULL, related_name="edited"
    )
    price = models.DecimalField(max_digits=8, decimal_places=2, default=10)
    status = models.IntegerField(default=1)
    published = models.DateTimeField(null=True, blank=True)
    tags = models.ManyToManyField(Tag, blank=True, related_name="books")


class Review(models.Model):
    book = models.ForeignKey(Book, on_delete=models.CASCADE, related_name="reviews")
    score = models.IntegerField()


class Place(models.Model):
    name = models.CharField(max_length=50)


class Restaurant(Place):  # multi-table inheritance
    serves_pizza = models.BooleanField(default=False)


class AuthorProxy(Author):
    class Meta:
        proxy = True


class AuthorView(models.Model):
    """Unmanaged: stands for a database view over the author table."""

    name = models.CharField(max_length=100)

    class Meta:
        managed = False
        db_table = "testapp_author"


class Blob(models.Model):
    data = models.BinaryField()


class Club(models.Model):
    name = models.CharField(max_length=50)
    members = models.ManyToManyField(Author, through="ClubMember", related_name="clubs")


class ClubMember(models.Model):
    club = models.ForeignKey(Club, on_delete=models.CASCADE)
    author = models.ForeignKey(Author, on_delete=models.CASCADE)
    role = models.CharField(max_length=20, default="member")


class Ticket(models.Model):
    """A UUID primary key (querystash-fields reads old values by it)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    author = models.ForeignKey(Author, on_delete=models.CASCADE)
    status = models.IntegerField(default=0)


class Badge(models.Model):
    """A CharField primary key (querystash-fields reads old values by it)."""

    code = models.CharField(primary_key=True, max_length=20)
    author = models.ForeignKey(Author, on_delete=models.CASCADE)
    status = models.IntegerField(default=0)


class Doc(models.Model):
    """Parameter types that are not plain str/int (tests/test_keys.py)."""

    data = models.JSONField(null=True)
    ip = models.GenericIPAddressField(null=True)
    uid = models.UUIDField(null=True)
    span = models.DurationField(null=True)
    at = models.DateTimeField(null=True)
    ratio = models.FloatField(null=True)

    class Meta:
        # Also keeps JSONField's system check from querying every database
        # (tests run `manage.py check` without database access).
        required_db_features = {"supports_json_field"}
