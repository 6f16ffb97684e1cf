from setuptools import find_packages, setup

# sql/ (the DBA scripts) and migrations/ (the Alembic revisions) stay at the top of the repository, where DBAs and
# Flask-Migrate find them in a checkout, and ship inside the package as jobprocessor/sql and jobprocessor/migrations
# (jobprocessor/shipped.py looks in both places), so a non-editable install can run `flask db upgrade`.
SHIPPED = {
    "jobprocessor.sql": "sql",
    "jobprocessor.sql.server": "sql/server",
    "jobprocessor.migrations": "migrations",
    "jobprocessor.migrations.versions": "migrations/versions",
}

setup(
    packages=find_packages(exclude=["tests", "tests.*", "bench", "bench.*"]) + list(SHIPPED),
    package_dir=SHIPPED,
    package_data={
        # setup.cfg's [options.package_data] gives way to this argument: the dashboard's files are named here too
        "jobprocessor": ["dashboard/templates/dashboard/*.html", "dashboard/static/*"],
        "jobprocessor.sql": ["*.sql", "README.md"],
        "jobprocessor.sql.server": ["*.sql"],
        "jobprocessor.migrations": ["alembic.ini", "script.py.mako"],
    },
)
