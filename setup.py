"""Install hgext_luigi: a Mercurial extension that plans, runs and traces Luigi pipelines."""

from setuptools import find_packages, setup

setup(
    name="hgext_luigi",
    version="0.1.0",
    description=(
        "Mercurial extension: run the Luigi tasks a changeset affects, stamp every "
        "output with the changeset and answer lineage questions"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="GPL-2.0-or-later",
    python_requires=">=3.9",
    packages=find_packages(include=["hgext_luigi", "hgext_luigi.*"]),
    install_requires=[
        "mercurial>=6.5",
        "luigi>=3.5",
        "ansible-runner>=2.3",
    ],
    extras_require={
        # AnsiblePlaybookTask runs ansible-playbook from ansible-core
        "ansible": ["ansible-core>=2.15"],
        # StepFunctionsTask and hg luigi-callback
        "aws": ["boto3>=1.28"],
        # hgext_luigi.wsgi: OIDC tokens for pushes over HTTP
        "oidc": ["PyJWT[crypto]>=2.15"],
        # OpenLineage run events of task builds (configured the client's own way)
        "openlineage": ["openlineage-python>=1.20"],
        # the PostgreSQL store (lineage, push queue, audit log) through psycopg 3
        "postgresql": ["psycopg[binary]>=3.1"],
        "test": ["pytest>=7", "pytest-timeout>=2", "pytest-xdist>=3", "ansible-core>=2.15",
                 "boto3>=1.28", "moto[server]>=5", "PyJWT[crypto]>=2.15",
                 "openlineage-python>=1.20", "jsonschema>=4", "psycopg[binary]>=3.1"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Software Development :: Version Control :: Mercurial",
    ],
)
