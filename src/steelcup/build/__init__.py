"""`docker build`: Dockerfiles parsed and planned here, every RUN step run in its own VM."""
