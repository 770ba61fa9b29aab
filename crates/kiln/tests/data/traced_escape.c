/* Escapes a RUN tries under traced isolation (build_in_pod.rs compiles
 * this statically and COPYs it into the image): `escape DIR`. Each
 * attempt prints one line "name: result"; every write aims at DIR/c or
 * DIR/new, a canary directory outside the RUN's rootfs. The test checks
 * the canaries, and that the attempts the filter refuses were refused. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <time.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

static void report(const char *name, long r) {
	if (r < 0)
		printf("%s: %s\n", name, strerror(errno));
	else
		printf("%s: ok\n", name);
	fflush(stdout);
}

static void pwn_at(int dirfd, const char *path) {
	int fd = openat(dirfd, path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd >= 0) {
		(void)!write(fd, "pwned\n", 6);
		close(fd);
	}
}

static int tracer_pid(void) {
	char line[256];
	int pid = 0;
	FILE *f = fopen("/proc/self/status", "r");
	if (!f)
		return 0;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "TracerPid: %d", &pid) == 1)
			break;
	fclose(f);
	return pid;
}

static char C[4096], NEW[4096];

static int untraced_child(void *arg) {
	(void)arg;
	pwn_at(AT_FDCWD, C);
	_exit(0);
}

/* The race the tracer alone would lose: it resolves /tmp/race-d/c inside
 * the rootfs while another thread swaps race-d with a symlink to the
 * canary directory (an absolute path, which the kernel follows from the
 * host's root). Landlock, checked by the kernel on the file reached,
 * refuses it; "race reached" counts the opens that got out. */
static volatile int race_stop;

static void *race_swapper(void *arg) {
	(void)arg;
	while (!race_stop)
		syscall(SYS_renameat2, AT_FDCWD, "/tmp/race-d", AT_FDCWD, "/tmp/race-l", 1 << 1 /* RENAME_EXCHANGE */);
	return NULL;
}

static void race(const char *dir) {
	/* The earlier attempts made DIR/c inside the rootfs (where the tracer
	 * sent them): gone, an open that succeeds can only have got out. */
	unlink(C);
	mkdir("/tmp/race-d", 0755);
	unlink("/tmp/race-l");
	if (symlink(dir, "/tmp/race-l") != 0) {
		report("race symlink", -1);
		return;
	}
	pthread_t t;
	race_stop = 0;
	pthread_create(&t, NULL, race_swapper, NULL);
	int reached = 0, tries = 0;
	time_t end = time(NULL) + 2;
	while (time(NULL) < end) {
		int fd = open("/tmp/race-d/c", O_WRONLY | O_TRUNC);
		tries++;
		if (fd >= 0) {
			(void)!write(fd, "pwned\n", 6);
			close(fd);
			reached++;
		}
	}
	race_stop = 1;
	pthread_join(t, NULL);
	printf("race reached: %d (of %d tries)\n", reached, tries);
	fflush(stdout);
}

int main(int argc, char **argv) {
	if (argc != 2 || argv[1][0] != '/')
		return 2;
	snprintf(C, sizeof C, "%s/c", argv[1]);
	snprintf(NEW, sizeof NEW, "%s/new", argv[1]);
	/* Inherited fds: none above 2. */
	int open_fds = 0;
	for (int fd = 3; fd < 1024; fd++)
		if (fcntl(fd, F_GETFD) >= 0)
			open_fds++;
	printf("inherited fds: %d\n", open_fds);

	int tracer = tracer_pid();
	printf("tracer visible: %s\n", tracer > 0 ? "yes" : "no");
	report("ptrace attach tracer", ptrace(PTRACE_ATTACH, tracer, 0, 0));
	report("ptrace traceme", ptrace(PTRACE_TRACEME, 0, 0, 0));
	char buf[8] = "pwned";
	struct iovec local = {buf, 5}, remote = {(void *)0x400000, 5};
	report("process_vm_writev", syscall(SYS_process_vm_writev, tracer, &local, 1, &remote, 1, 0));
	report("pidfd_getfd", syscall(SYS_pidfd_getfd, 0, 0, 0));
	report("seccomp", syscall(SYS_seccomp, 1, 0, NULL));
	report("prctl seccomp", prctl(PR_SET_SECCOMP, 2, 0, 0, 0));
	report("io_uring_setup", syscall(SYS_io_uring_setup, 8, buf));
	report("name_to_handle_at", syscall(SYS_name_to_handle_at, AT_FDCWD, "/", buf, buf, 0));
	report("open_by_handle_at", syscall(SYS_open_by_handle_at, AT_FDCWD, buf, 0));
	report("chroot", chroot("/"));
	report("mount", syscall(SYS_mount, "none", "/", "tmpfs", 0, 0));
	report("unshare", unshare(CLONE_NEWUSER));
	report("clone3", syscall(SYS_clone3, buf, 8));

	/* A clone the tracer would not see. */
	static char stack[65536];
	int pid = clone(untraced_child, stack + sizeof stack, CLONE_UNTRACED | SIGCHLD, NULL);
	report("clone untraced", pid);
	if (pid > 0)
		waitpid(pid, NULL, 0);

	/* /proc/<tracer>/mem and root: the tracer is not in the traced tree. */
	char p[64];
	snprintf(p, sizeof p, "/proc/%d/mem", tracer);
	report("open tracer mem", open(p, O_RDWR));
	char q[8192];
	snprintf(q, sizeof q, "/proc/%d/root%s", tracer, NEW);
	pwn_at(AT_FDCWD, q);
	snprintf(q, sizeof q, "/proc/1/root%s", NEW);
	pwn_at(AT_FDCWD, q);

	/* A dirfd of / from before a chdir, and `..` from it. */
	int root = open("/", O_PATH | O_DIRECTORY);
	snprintf(q, sizeof q, "../../../..%s", NEW);
	pwn_at(root, q);
	pwn_at(root, C + 1);
	int self_root = open("/proc/self/root", O_PATH | O_DIRECTORY);
	snprintf(q, sizeof q, "..%s", C);
	pwn_at(self_root, q);
	chdir("/");
	snprintf(q, sizeof q, "../../..%s", NEW);
	pwn_at(AT_FDCWD, q);
	/* A forked and a vforked child write through absolute paths. */
	if (fork() == 0) {
		pwn_at(AT_FDCWD, C);
		_exit(0);
	}
	wait(NULL);
	snprintf(q, sizeof q, "echo pwned > %s; echo pwned > /proc/self/root/%s", C, NEW);
	if (vfork() == 0) {
		execl("/bin/sh", "sh", "-c", q, NULL);
		_exit(1);
	}
	wait(NULL);
	char cwd[4096];
	printf("getcwd: %s\n", getcwd(cwd, sizeof cwd) ? cwd : strerror(errno));
	ssize_t n = readlink("/proc/self/root", cwd, sizeof cwd - 1);
	cwd[n > 0 ? n : 0] = 0;
	printf("readlink root: %s\n", cwd);
	printf("uid: %d euid: %d\n", getuid(), geteuid());
	race(argv[1]);
	return 0;
}
