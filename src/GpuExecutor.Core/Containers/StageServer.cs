using System.Text;

namespace GpuExecutor.Containers;

/// <summary>
/// The main process of every job container: a small server, written in bash builtins only, that
/// runs stage scripts sent to it over the container's stdin (Docker's attach API).
///
/// Why not one `docker exec` per stage: on Docker 20.10 an exec start costs about 105 ms in the
/// daemon and runc alone, more than the whole per-stage budget (docs/testbed.md, docs/benchmarks.md
/// benchmark). Attaching to a running container costs a few milliseconds. The server also keeps
/// the stage alive when the executor process dies, and its output goes to the container's log.
///
/// Protocol, one request per line on stdin; replies are lines "\x1egpu-executor:NONCE:NUMBER\n"
/// on stdout, mixed into the stages' output:
///   run NONCE -          followed by one line: the script, with '\' and newline escaped for
///                        printf %b. When the stage ends, the reply carries its exit code; it
///                        comes on stderr as well as stdout, because Docker delivers the two
///                        streams independently: only a marker on each shows that stream is done.
///   signal NONCE SIGNAL  send SIGNAL to every process but PID 1, the server and the stage
///                        wrappers (the container runs one stage at a time: that is the stage).
///   count NONCE -        reply with how many such processes are alive, so a stop can end as
///                        soon as the last one (say, a trainer writing its final checkpoint)
///                        has exited, rather than when the grace period runs out.
///   status NONCE STAGE   reply with the state of the wrapper that runs stage STAGE (by its
///                        nonce): <see cref="WrapperRunning"/>, <see cref="WrapperUnknown"/>, or
///                        its exit status once it has ended: 0 when it ended as it should,
///                        having replied; 128 + N when signal N killed it before it could.
///
/// The server is the container's PID 1 (no tini). The kernel delivers a signal from inside the
/// container to its PID 1 only when PID 1 handles it, and SIGKILL never: a stage that runs
/// `kill -9 -1` (every process but PID 1 and itself) or `kill -9 1` cannot end the server, and
/// with it the container, and so cannot pass its own doing off as the host failing. It can
/// still kill the wrapper of its stage, which would have printed the stage's reply: `run` asks
/// for the wrapper's `status` every few seconds, and a wrapper killed before its reply ends the
/// stage as the job's own failure. The one signal the server handles, TERM, is how Docker
/// stops a container; a stage can send it too, and `run` tells the two apart by Docker's events.
/// bash as PID 1 reaps orphans: its SIGCHLD handler waits for any child, not only its jobs.
///
/// The server's own diagnostics never reach the job log: a wrapper whose stage was SIGKILLed would
/// print bash's "line 5: 31 Killed bash &lt; &lt;(printf …)" notice, the server the same of a
/// wrapper that a job killed, and a process that exits while `count` reads its /proc entry
/// "No such file or directory". So the server's and each wrapper's own stderr is /dev/null; the
/// container's stderr is kept on fd 4 for the server's word and given to the stage through fd 3;
/// and the /proc read silences its redirection error (the 2>/dev/null comes first: redirections
/// apply left to right).
///
/// A stop of the container itself (`docker stop`, or a daemon without live-restore shutting down,
/// as on a host's reboot) reaches the server as SIGTERM: it passes the signal on to the stage and
/// waits for it, so a trainer saves its checkpoint as on any stop, within the container's stop
/// timeout (run.stop_grace_seconds), instead of dying with PID 1.
/// If stdin ever closes, the server falls back to idling so the container stays up for cleanup.
/// A fixed string: nothing from the job reaches it except through the stage script itself.
/// </summary>
public static class StageServer
{
    private const string Script = """
        exec 4>&2 2>/dev/null
        wrappers=" "
        last_run=""
        declare -A wrapper_of ended_with
        signal_or_count() {
          local verb="$1" nonce="$2" argument="$3" alive=0 entry pid stat state
          for entry in /proc/[0-9]*; do
            pid="${entry#/proc/}"
            [[ $pid == 1 || $pid == "$$" || $wrappers == *" $pid "* ]] && continue
            if [[ $verb == signal ]]; then
              kill -s "$argument" "$pid" 2>/dev/null
            elif IFS= read -r stat 2>/dev/null < "$entry/stat"; then
              state="${stat##*) }"
              [[ ${state:0:1} == Z ]] || alive=$((alive + 1))
            fi
          done
          [[ $verb == count ]] && printf '\036gpu-executor:%s:%d\n' "$nonce" "$alive"
        }
        stop_stages() {
          [[ -n $last_run ]] && printf '\036gpu-executor:%sc0ffee:%d\n' "$last_run" 15 >&4
          signal_or_count signal - TERM
          wait
          exit 0
        }
        trap stop_stages TERM
        while :; do
          IFS=' ' read -r verb nonce argument || break
          case "$verb" in
            run)
              IFS= read -r encoded || break
              last_run="$nonce"
              { bash < <(printf '%b' "$encoded") 2>&3 3>&-; code=$?; printf '\036gpu-executor:%s:%d\n' "$nonce" "$code" >&3; printf '\036gpu-executor:%s:%d\n' "$nonce" "$code"; } 3>&4 4>&- 2>/dev/null &
              wrappers+="$! "
              wrapper_of[$nonce]=$!
              ;;
            status)
              code=257
              if [[ -n ${ended_with[$argument]} ]]; then
                code=${ended_with[$argument]}
              elif [[ -n ${wrapper_of[$argument]} ]]; then
                if kill -0 "${wrapper_of[$argument]}" 2>/dev/null; then code=256; else wait "${wrapper_of[$argument]}"; code=$?; ended_with[$argument]=$code; fi
              fi
              printf '\036gpu-executor:%s:%d\n' "$nonce" "$code"
              ;;
            signal|count)
              signal_or_count "$verb" "$nonce" "$argument"
              ;;
          esac
        done
        while :; do bash -c 'exec 3<> <(:); read -r -u 3 _' 4>&- & wait $!; done
        """;

    public static readonly IReadOnlyList<string> Command = ["bash", "-c", Script, "gpu-executor-stage-server"];

    /// <summary>
    /// What the server says on the container's stderr, in the place of a nonce, when the container
    /// itself is being stopped: the nonce of the last stage it ran, with a fixed suffix, so only
    /// the `run` that sent that stage knows it (a stage's processes never see its nonce) and no
    /// job can fake the word. Whoever reads the stage's output learns that the signal notices
    /// that follow are the stop's echo.
    /// </summary>
    public static string ContainerStopNonce(string stageNonce) => stageNonce + "c0ffee";

    /// <summary>Every reply line starts with this, then "NONCE:NUMBER\n".</summary>
    public static ReadOnlySpan<byte> ReplyPrefix => "\u001egpu-executor:"u8;

    public static string NewNonce() => Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(12));

    /// <summary>
    /// A run request. The script travels as one line that printf %b turns back into the same
    /// bytes: backslashes are doubled and newlines written as \n, so no other escape can appear.
    /// NUL bytes cannot live in a bash variable and are dropped; runner scripts have none.
    /// </summary>
    public static byte[] RunRequest(string nonce, ReadOnlySpan<byte> script)
    {
        var header = Encoding.ASCII.GetBytes($"run {nonce} -\n");
        var request = new List<byte>(header.Length + script.Length + script.Length / 16 + 2);
        request.AddRange(header);
        foreach (var value in script)
        {
            switch (value)
            {
                case (byte)'\\':
                    request.Add((byte)'\\');
                    request.Add((byte)'\\');
                    break;
                case (byte)'\n':
                    request.Add((byte)'\\');
                    request.Add((byte)'n');
                    break;
                case 0:
                    break;
                default:
                    request.Add(value);
                    break;
            }
        }
        request.Add((byte)'\n');
        return request.ToArray();
    }

    /// <param name="signal">A name from the config's fixed allowlist (TERM, USR1, ...) or KILL.</param>
    public static byte[] SignalRequest(string nonce, string signal) => Encoding.ASCII.GetBytes($"signal {nonce} {signal}\n");

    /// <summary>The nonce of every `status` reply about one stage: derived from the stage's, which no job knows.</summary>
    public static string StatusNonce(string stageNonce) => stageNonce + "57a705";

    /// <summary>Asks for the state of the wrapper that runs the stage <paramref name="stageNonce"/>.</summary>
    public static byte[] StatusRequest(string nonce, string stageNonce) => Encoding.ASCII.GetBytes($"status {nonce} {stageNonce}\n");

    /// <summary>`status`: the stage's wrapper is still running.</summary>
    public const int WrapperRunning = 256;

    /// <summary>`status`: the server never ran that stage (or, in a container from before `status`, no reply comes at all).</summary>
    public const int WrapperUnknown = 257;

    /// <summary>`status`: a wrapper's exit status from this on means a signal killed it (128 + the signal's number).</summary>
    public const int KilledBySignal = 128;

    /// <summary>Asks how many of the container's processes (other than the server's own) are alive.</summary>
    public static byte[] CountRequest(string nonce) => Encoding.ASCII.GetBytes($"count {nonce} -\n");
}
