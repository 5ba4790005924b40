"""Reads of the Hub's database that more than one part of the library needs."""

from jupyterhub import orm


def server_rows(db):
    """A query of ``(user id, user name, server name, state)`` for every server with a server
    record (running or starting), in a stable order: one query, however many servers there are."""
    return (
        db.query(orm.User.id, orm.User.name, orm.Spawner.name, orm.Spawner.state)
        .join(orm.Spawner.user)
        .filter(orm.Spawner.server_id.isnot(None))
        .order_by(orm.User.id, orm.Spawner.name)
    )
