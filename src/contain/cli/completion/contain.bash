# bash completion for contain (generated from its argument parser; `contain completion bash`)
_contain_containers() {
    local root_args=()
    [[ -n "$_contain_root" ]] && root_args=(--root "$_contain_root")
    contain "${root_args[@]}" ps -a --format "{{.Names}}" 2>/dev/null
}
_contain_images() {
    local root_args=()
    [[ -n "$_contain_root" ]] && root_args=(--root "$_contain_root")
    contain "${root_args[@]}" images --format "{{.Repository}}:{{.Tag}}" 2>/dev/null | grep -v "<none>"
}
_contain() {
    local cur prev words cword
    cur="${COMP_WORDS[COMP_CWORD]}"
    prev="${COMP_WORDS[COMP_CWORD-1]}"
    local i cmd="" sub="" _contain_root=""
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${COMP_WORDS[i]}" in
            --root) _contain_root="${COMP_WORDS[i+1]}"; ((i++)) ;;
            -*) ;;
            *) if [[ -z "$cmd" ]]; then cmd="${COMP_WORDS[i]}"; elif [[ -z "$sub" ]]; then sub="${COMP_WORDS[i]}"; fi ;;
        esac
    done
    local commands="run create start stop restart kill rm pause unpause wait rename ps logs exec attach commit cp diff top stats port export images pull push search login logout tag rmi save load import history build inspect version info network volume system completion"
    if [[ -z "$cmd" ]]; then
        if [[ "$prev" == "--root" ]]; then COMPREPLY=($(compgen -d -- "$cur")); return; fi
        COMPREPLY=($(compgen -W "$commands --root --version --help" -- "$cur"))
        return
    fi
    local opts=""
    case "$cmd" in
        run) opts="--help -d --detach --detach-keys --sig-proxy -i --interactive -t --tty --name -e --env --env-file -l --label --label-file -p --publish -P --publish-all --expose -v --volume --mount --tmpfs -w --workdir -u --user -h --hostname --entrypoint --network --net --network-alias -m --memory --memory-swap --memory-reservation --cpus -c --cpu-shares --cpuset-cpus --pids-limit --shm-size --read-only --restart --rm --init --cap-add --cap-drop --privileged --stop-signal --stop-timeout --log-opt --log-driver --oom-score-adj --platform --pull -q --quiet" ;;
        create) opts="--help -i --interactive -t --tty --name -e --env --env-file -l --label --label-file -p --publish -P --publish-all --expose -v --volume --mount --tmpfs -w --workdir -u --user -h --hostname --entrypoint --network --net --network-alias -m --memory --memory-swap --memory-reservation --cpus -c --cpu-shares --cpuset-cpus --pids-limit --shm-size --read-only --restart --rm --init --cap-add --cap-drop --privileged --stop-signal --stop-timeout --log-opt --log-driver --oom-score-adj --platform --pull -q --quiet" ;;
        start) opts="--help -a --attach -i --interactive --detach-keys" ;;
        stop) opts="--help -t --time --timeout -s --signal" ;;
        restart) opts="--help -t --time --timeout -s --signal" ;;
        kill) opts="--help -s --signal" ;;
        rm) opts="--help -f --force -v --volumes" ;;
        pause) opts="--help" ;;
        unpause) opts="--help" ;;
        wait) opts="--help" ;;
        rename) opts="--help" ;;
        ps) opts="--help -a --all -q --quiet -l --latest -n --last -s --size --no-trunc -f --filter --format" ;;
        logs) opts="--help -f --follow -t --timestamps -n --tail --since --until --details" ;;
        exec) opts="--help -d --detach -i --interactive -t --tty -e --env --env-file -w --workdir -u --user --privileged --detach-keys" ;;
        attach) opts="--help --no-stdin --detach-keys --sig-proxy" ;;
        commit) opts="--help -a --author -c --change -m --message -p --pause" ;;
        cp) opts="--help -a --archive -L --follow-link" ;;
        diff) opts="--help" ;;
        top) opts="--help" ;;
        stats) opts="--help -a --all --no-stream --no-trunc --format" ;;
        port) opts="--help" ;;
        export) opts="--help -o --output" ;;
        images) opts="--help -a --all -q --quiet --digests --no-trunc -f --filter --format" ;;
        pull) opts="--help -q --quiet --platform -a --all-tags" ;;
        push) opts="--help -q --quiet --compression" ;;
        search) opts="--help -f --filter --limit --no-trunc --format" ;;
        login) opts="--help -u --username -p --password --password-stdin" ;;
        logout) opts="--help" ;;
        tag) opts="--help" ;;
        rmi) opts="--help -f --force --no-prune" ;;
        save) opts="--help -o --output --format" ;;
        load) opts="--help -i --input -q --quiet" ;;
        import) opts="--help -c --change -m --message --platform" ;;
        history) opts="--help -H --human --no-trunc -q --quiet --format" ;;
        build) opts="--help -t --tag -f --file --build-arg --no-cache --target -q --quiet --label --platform" ;;
        inspect) opts="--help -f --format --type -s --size" ;;
        version) opts="--help -f --format" ;;
        info) opts="--help -f --format" ;;
        network)
            case "$sub" in
                create) opts="-h --help -d --driver --subnet --gateway --label" ;;
                ls) opts="-h --help -q --quiet --no-trunc -f --filter --format" ;;
                list) opts="-h --help -q --quiet --no-trunc -f --filter --format" ;;
                rm) opts="-h --help" ;;
                remove) opts="-h --help" ;;
                inspect) opts="-h --help -f --format" ;;
                connect) opts="-h --help --alias" ;;
                disconnect) opts="-h --help -f --force" ;;
                prune) opts="-h --help -f --force" ;;
                "") COMPREPLY=($(compgen -W "create ls list rm remove inspect connect disconnect prune" -- "$cur")); return ;;
            esac ;;
        volume)
            case "$sub" in
                create) opts="-h --help -d --driver --label" ;;
                ls) opts="-h --help -q --quiet -f --filter --format" ;;
                list) opts="-h --help -q --quiet -f --filter --format" ;;
                rm) opts="-h --help -f --force" ;;
                remove) opts="-h --help -f --force" ;;
                inspect) opts="-h --help -f --format" ;;
                prune) opts="-h --help -f --force" ;;
                "") COMPREPLY=($(compgen -W "create ls list rm remove inspect prune" -- "$cur")); return ;;
            esac ;;
        system)
            case "$sub" in
                df) opts="-h --help --format -v --verbose" ;;
                prune) opts="-h --help -a --all -f --force --volumes" ;;
                info) opts="-h --help -f --format" ;;
                "") COMPREPLY=($(compgen -W "df prune info" -- "$cur")); return ;;
            esac ;;
        completion) opts="--help" ;;
    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
        return
    fi
    case "$prev" in
        -f|--file|-o|--output|-i|--input|--env-file|--label-file) COMPREPLY=($(compgen -f -- "$cur")); return ;;
        --network|--net) COMPREPLY=($(compgen -W "none host bridge $(contain network ls --format "{{.Name}}" 2>/dev/null)" -- "$cur")); return ;;
        -s|--signal) COMPREPLY=($(compgen -W "KILL TERM INT HUP QUIT USR1 USR2 STOP CONT" -- "$cur")); return ;;
        --restart) COMPREPLY=($(compgen -W "no always unless-stopped on-failure" -- "$cur")); return ;;
    esac
    case "$cmd" in
        start|stop|restart|kill|rm|pause|unpause|wait|rename|logs|exec|attach|commit|cp|diff|top|stats|port|export|inspect) COMPREPLY=($(compgen -W "$(_contain_containers)" -- "$cur")) ;;
        run|create|images|push|tag|rmi|save|history) COMPREPLY=($(compgen -W "$(_contain_images)" -- "$cur")) ;;
        build|load|import) COMPREPLY=($(compgen -f -- "$cur")) ;;
        completion) COMPREPLY=($(compgen -W "bash zsh" -- "$cur")) ;;
    esac
}
complete -F _contain contain
