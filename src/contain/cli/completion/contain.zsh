#compdef contain
# zsh completion for contain (generated from its argument parser; `contain completion zsh`)

_contain_containers() {
  local -a names
  names=(${(f)"$(contain ${_contain_root:+--root $_contain_root} ps -a --format "{{.Names}}" 2>/dev/null)"})
  _describe -t containers container names
}

_contain_images() {
  local -a refs
  refs=(${(f)"$(contain ${_contain_root:+--root $_contain_root} images --format "{{.Repository}}:{{.Tag}}" 2>/dev/null | grep -v "<none>")"})
  _describe -t images image refs
}

_contain() {
  local _contain_root
  local -a commands
  commands=(
    'run:Create and run a new container from an image'
    'create:Create a new container'
    'start:Start one or more stopped containers'
    'stop:Stop one or more running containers'
    'restart:Restart one or more containers'
    'kill:Kill one or more running containers'
    'rm:Remove one or more containers'
    'pause:Pause all processes within one or more containers'
    'unpause:Unpause all processes within one or more containers'
    'wait:Block until one or more containers stop, then print their exit codes'
    'rename:Rename a container'
    'ps:List containers'
    'logs:Fetch the logs of a container'
    'exec:Execute a command in a running container'
    'attach:Attach local standard input, output, and error streams to a running container'
    'commit:Create a new image from a containers changes'
    'cp:Copy files/folders between a container and the local filesystem'
    'diff:Inspect changes to files or directories on a containers filesystem'
    'top:Display the running processes of a container'
    'stats:Display a live stream of container(s) resource usage statistics'
    'port:List port mappings or a specific mapping for the container'
    'export:Export a containers filesystem as a tar archive'
    'images:List images'
    'pull:Download an image from a registry'
    'push:Upload an image to a registry'
    'search:Search Docker Hub (or a registry) for images'
    'login:Log in to a registry'
    'logout:Log out from a registry'
    'tag:Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE'
    'rmi:Remove one or more images'
    'save:Save one or more images to a tar archive (streamed to STDOUT by default)'
    'load:Load an image from a tar archive or STDIN'
    'import:Import the contents from a tarball to create a filesystem image'
    'history:Show the history of an image'
    'build:Build an image from a Dockerfile'
    'inspect:Return low-level information on contain objects'
    'version:Show the contain version information'
    'info:Display system-wide information'
    'network:Manage networks'
    'volume:Manage volumes'
    'system:Manage contain'
    'completion:Print a shell completion script (bash or zsh)'
  )
  local i
  for ((i = 2; i < CURRENT; i++)); do
    [[ ${words[i]} == --root ]] && _contain_root=${words[i+1]}
  done
  _arguments -C \
    '--root[State root]:directory:_files -/' \
    '(-v --version)'{-v,--version}'[Print version information]' \
    '1:command:->command' \
    '*::arg:->args'
  case $state in
    command) _describe -t commands command commands ;;
    args)
      local cmd=${words[1]}
      local -a opts
      case $cmd in
        run) opts=(--help -d --detach --detach-keys --sig-proxy -i --interactive -t --tty --name -e --env --env-file -l --label --label-file -p --publish -P --publish-all --expose -v --volume --mount --tmpfs -w --workdir -u --user -h --hostname --entrypoint --network --net --network-alias -m --memory --memory-swap --memory-reservation --cpus -c --cpu-shares --cpuset-cpus --pids-limit --shm-size --read-only --restart --rm --init --cap-add --cap-drop --privileged --stop-signal --stop-timeout --log-opt --log-driver --oom-score-adj --platform --pull -q --quiet) ;;
        create) opts=(--help -i --interactive -t --tty --name -e --env --env-file -l --label --label-file -p --publish -P --publish-all --expose -v --volume --mount --tmpfs -w --workdir -u --user -h --hostname --entrypoint --network --net --network-alias -m --memory --memory-swap --memory-reservation --cpus -c --cpu-shares --cpuset-cpus --pids-limit --shm-size --read-only --restart --rm --init --cap-add --cap-drop --privileged --stop-signal --stop-timeout --log-opt --log-driver --oom-score-adj --platform --pull -q --quiet) ;;
        start) opts=(--help -a --attach -i --interactive --detach-keys) ;;
        stop) opts=(--help -t --time --timeout -s --signal) ;;
        restart) opts=(--help -t --time --timeout -s --signal) ;;
        kill) opts=(--help -s --signal) ;;
        rm) opts=(--help -f --force -v --volumes) ;;
        pause) opts=(--help) ;;
        unpause) opts=(--help) ;;
        wait) opts=(--help) ;;
        rename) opts=(--help) ;;
        ps) opts=(--help -a --all -q --quiet -l --latest -n --last -s --size --no-trunc -f --filter --format) ;;
        logs) opts=(--help -f --follow -t --timestamps -n --tail --since --until --details) ;;
        exec) opts=(--help -d --detach -i --interactive -t --tty -e --env --env-file -w --workdir -u --user --privileged --detach-keys) ;;
        attach) opts=(--help --no-stdin --detach-keys --sig-proxy) ;;
        commit) opts=(--help -a --author -c --change -m --message -p --pause) ;;
        cp) opts=(--help -a --archive -L --follow-link) ;;
        diff) opts=(--help) ;;
        top) opts=(--help) ;;
        stats) opts=(--help -a --all --no-stream --no-trunc --format) ;;
        port) opts=(--help) ;;
        export) opts=(--help -o --output) ;;
        images) opts=(--help -a --all -q --quiet --digests --no-trunc -f --filter --format) ;;
        pull) opts=(--help -q --quiet --platform -a --all-tags) ;;
        push) opts=(--help -q --quiet --compression) ;;
        search) opts=(--help -f --filter --limit --no-trunc --format) ;;
        login) opts=(--help -u --username -p --password --password-stdin) ;;
        logout) opts=(--help) ;;
        tag) opts=(--help) ;;
        rmi) opts=(--help -f --force --no-prune) ;;
        save) opts=(--help -o --output --format) ;;
        load) opts=(--help -i --input -q --quiet) ;;
        import) opts=(--help -c --change -m --message --platform) ;;
        history) opts=(--help -H --human --no-trunc -q --quiet --format) ;;
        build) opts=(--help -t --tag -f --file --build-arg --no-cache --target -q --quiet --label --platform) ;;
        inspect) opts=(--help -f --format --type -s --size) ;;
        version) opts=(--help -f --format) ;;
        info) opts=(--help -f --format) ;;
        network)
          if (( CURRENT == 2 )); then
            local -a subs; subs=(create ls list rm remove inspect connect disconnect prune); _describe -t commands subcommand subs; return
          fi
          case ${words[2]} in
            create) opts=(-h --help -d --driver --subnet --gateway --label) ;;
            ls) opts=(-h --help -q --quiet --no-trunc -f --filter --format) ;;
            list) opts=(-h --help -q --quiet --no-trunc -f --filter --format) ;;
            rm) opts=(-h --help) ;;
            remove) opts=(-h --help) ;;
            inspect) opts=(-h --help -f --format) ;;
            connect) opts=(-h --help --alias) ;;
            disconnect) opts=(-h --help -f --force) ;;
            prune) opts=(-h --help -f --force) ;;
          esac ;;
        volume)
          if (( CURRENT == 2 )); then
            local -a subs; subs=(create ls list rm remove inspect prune); _describe -t commands subcommand subs; return
          fi
          case ${words[2]} in
            create) opts=(-h --help -d --driver --label) ;;
            ls) opts=(-h --help -q --quiet -f --filter --format) ;;
            list) opts=(-h --help -q --quiet -f --filter --format) ;;
            rm) opts=(-h --help -f --force) ;;
            remove) opts=(-h --help -f --force) ;;
            inspect) opts=(-h --help -f --format) ;;
            prune) opts=(-h --help -f --force) ;;
          esac ;;
        system)
          if (( CURRENT == 2 )); then
            local -a subs; subs=(df prune info); _describe -t commands subcommand subs; return
          fi
          case ${words[2]} in
            df) opts=(-h --help --format -v --verbose) ;;
            prune) opts=(-h --help -a --all -f --force --volumes) ;;
            info) opts=(-h --help -f --format) ;;
          esac ;;
        completion) opts=(--help) ;;
      esac
      if [[ $PREFIX == -* ]]; then
        compadd -a opts
        return
      fi
      case $cmd in
        start|stop|restart|kill|rm|pause|unpause|wait|rename|logs|exec|attach|commit|cp|diff|top|stats|port|export|inspect) _contain_containers ;;
        run|create|images|push|tag|rmi|save|history) _contain_images ;;
        build|load|import) _files ;;
        completion) compadd bash zsh ;;
      esac ;;
  esac
}

if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
  _contain "$@"
else
  compdef _contain contain
fi
