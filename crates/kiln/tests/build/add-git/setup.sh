# Run by the harness in a scratch copy of this case, before building.
set -eu
export GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@example.com GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@example.com
export GIT_AUTHOR_DATE=@1700000000 GIT_COMMITTER_DATE=@1700000000
git -c init.defaultBranch=main init -q repo-src
git -C repo-src add README
git -C repo-src commit -qm v1
git -C repo-src tag v1
echo 'repo at main' > repo-src/README
git -C repo-src commit -qam main
mkdir -p git
git clone -q --bare repo-src git/repo.git
git -C git/repo.git update-server-info
rm -rf repo-src
