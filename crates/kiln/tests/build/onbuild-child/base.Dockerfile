# An image made to be built upon: its ONBUILD triggers are recorded.
FROM kiln-test/busybox:1
ONBUILD COPY app.txt /app/app.txt
ONBUILD RUN echo triggered > /app/triggered.txt
ONBUILD ENV FROM_ONBUILD=yes
LABEL role=base
