using System.Buffers;
using System.Collections.Concurrent;
using GpuExecutor.Configuration;
using GpuExecutor.Containers;
using GpuExecutor.Outcomes;

namespace GpuExecutor.Stages;

/// <summary>How a stage ended.</summary>
/// <param name="ExitCode">The script's own exit code, as bash reported it.</param>
/// <param name="Stopped">True when a stop (cancel, timeout, shutdown, or the deadline's signal) ended it.</param>
/// <param name="Killed">True when the stop had to SIGKILL processes that outlived the grace period.</param>
public sealed record StageResult(int ExitCode, bool Stopped, bool Killed = false);

/// <summary>
/// Runs one stage script in a job container through its <see cref="StageServer"/>, streams the
/// output live, and stops the stage on request through the one <see cref="StopSequence"/>: a
/// stop (the runner's SIGTERM) and the signal before the job's deadline take the same path.
/// </summary>
public sealed class StageRunner(IContainerDriver driver, RunSettings settings, Action<string> log, Action? beforeKill = null)
{
    private static readonly TimeSpan AttachTimeout = TimeSpan.FromSeconds(60);

    /// <summary>How often a followed stage is checked for having ended unseen.</summary>
    private static readonly TimeSpan FollowCheckInterval = TimeSpan.FromSeconds(2);

    private enum StopCause { Stop, Deadline }

    public async Task<StageResult> RunAsync(
        string container,
        ReadOnlyMemory<byte> script,
        Stream stdout,
        Stream stderr,
        CancellationToken stopRequested,
        CancellationToken signalRequested = default,
        string? nonce = null,
        bool follow = false)
    {
        using var attachTimeout = new CancellationTokenSource(AttachTimeout);
        using var attachment = await driver.AttachAsync(container, attachTimeout.Token);
        // Docker accepts an attach to a stopped container and then sends nothing, ever. A wait
        // on the container, started after attaching, ends the stage instead: at once if the
        // container is already stopped, and whenever it stops.
        using var stopWatching = new CancellationTokenSource();
        var containerStopped = WatchForStopAsync(container, stopWatching.Token);

        var session = new ServerSession(attachment, container);
        var stageNonce = nonce ?? StageServer.NewNonce();
        // The stage has ended once its reply came on both streams: each stream is ordered, the
        // two are not, so stderr written just before the end may arrive after stdout's reply.
        var stage = BothAsync(session.Expect(stageNonce), session.ExpectOnStderr(stageNonce));
        // Following a stage another `run` started (re-attach): it is running already, and only
        // its output from now on, and its reply, come this way.
        if (!follow)
            await attachment.WriteAsync(StageServer.RunRequest(stageNonce, script.Span), attachTimeout.Token);

        using var stopReading = new CancellationTokenSource();
        var reading = session.ReadAsync(stdout, stderr, stopReading.Token);
        if (follow)
            stage = FollowedAsync(session, stage);
        // Either of these ending first is the outcome: the stream failed, or the container stopped.
        var failure = Task.WhenAny(reading, containerStopped).Unwrap();
        try
        {
            // Whichever comes first starts the stop; the other then changes nothing, so a trainer
            // is never signalled twice (the deadline's signal and the runner's timeout can meet).
            var stop = new TaskCompletionSource<StopCause>(TaskCreationOptions.RunContinuationsAsynchronously);
            await using (signalRequested.Register(() => stop.TrySetResult(StopCause.Deadline)))
            await using (stopRequested.Register(() => stop.TrySetResult(StopCause.Stop)))
            {
                await Task.WhenAny(stage, failure, stop.Task);
            }
            if (stage.IsCompleted && !stop.Task.IsCompleted)
                return new StageResult(await stage, Stopped: false);
            if (failure.IsCompleted)
                await failure;

            log(await stop.Task == StopCause.Deadline
                ? $"The job's deadline is near: sending SIG{settings.StopSignal} to the stage's processes in {container} so the trainer can checkpoint before the runner stops the job; SIGKILL in {settings.StopGracePeriod.TotalSeconds:0} s if any is left."
                : $"Stop requested: sending SIG{settings.StopSignal} to the stage's processes in {container}, SIGKILL in {settings.StopGracePeriod.TotalSeconds:0} s if any is left.");
            // From here on, bash's "Terminated" notices are the stop's echo, not the job's news.
            session.ArmNoticeFilter();
            var sequence = new StopSequence(settings.StopSignal, settings.StopGracePeriod, log, beforeKill);
            var outcome = await sequence.RunAsync(new StageProcesses(session, stageNonce, stage, failure, log));
            return new StageResult(outcome.ExitCode, Stopped: true, outcome.Killed);
        }
        finally
        {
            await stopReading.CancelAsync();
            await stopWatching.CancelAsync();
            await Task.WhenAll(reading, containerStopped).ContinueWith(_ => { }, TaskScheduler.Default);
            await session.FlushAsync(stderr);
        }
    }

    /// <summary>
    /// A followed stage may have ended before this attach began, its reply then gone with no
    /// reader: when no process but the server's is left and no reply came, the stage is over
    /// and its exit code lost.
    /// </summary>
    private static async Task<int> FollowedAsync(ServerSession session, Task<int> stage)
    {
        while (await Task.WhenAny(stage, Task.Delay(FollowCheckInterval)) != stage)
        {
            if (await session.CountSurvivorsAsync(_ => { }) == 0 && await Task.WhenAny(stage, Task.Delay(TimeSpan.FromSeconds(2))) != stage)
                throw new SystemFailureException($"the stage followed in container '{session.Container}' ended before it could be followed, and its exit code with it (it is in the container's log).");
        }
        return await stage;
    }

    private static async Task<int> BothAsync(Task<int> stdoutReply, Task<int> stderrReply)
    {
        await stderrReply;
        return await stdoutReply;
    }

    /// <summary>Never completes successfully: it throws once the container is not running.</summary>
    private async Task WatchForStopAsync(string container, CancellationToken cancellationToken)
    {
        var exitCode = await driver.WaitUntilStoppedAsync(container, cancellationToken);
        throw new ContainerEngineException($"container '{container}' is not running (its main process exited with {exitCode}), so the stage cannot run or finish.");
    }

    /// <summary>The stage as the stop sequence sees it, through the stage server.</summary>
    private sealed class StageProcesses(ServerSession session, string stageNonce, Task<int> stage, Task failure, Action<string> log) : IStageProcesses
    {
        public Task SignalAsync(string signal) => session.SendAsync(StageServer.SignalRequest(stageNonce, signal), log);

        public async Task<bool> AllExitedAsync() => stage.IsCompleted && await session.CountSurvivorsAsync(log) == 0;

        public async Task PauseAsync(TimeSpan wait)
        {
            await Task.WhenAny(stage, failure, Task.Delay(wait));
            if (failure.IsCompleted)
                await failure;
        }

        public async Task<int> ExitCodeAsync(TimeSpan wait)
        {
            if (await Task.WhenAny(stage, failure, Task.Delay(wait)) != stage)
            {
                if (failure.IsCompleted)
                    await failure;
                throw new SystemFailureException($"the stage in container '{session.Container}' did not end {wait.TotalSeconds:0} s after SIGKILL.");
            }
            return await stage;
        }
    }

    /// <summary>One attachment's conversation with the stage server: requests out, output and replies in.</summary>
    private sealed class ServerSession(IContainerAttachment attachment, string container)
    {
        private readonly ConcurrentDictionary<string, TaskCompletionSource<int>> _pending = new();
        private readonly ConcurrentDictionary<string, TaskCompletionSource<int>> _pendingOnStderr = new();
        private readonly SignalNoticeFilter _stderrNotices = new();
        private readonly Lock _stderrLock = new();

        public string Container => container;

        public Task<int> Expect(string nonce) => Register(_pending, nonce);

        public Task<int> ExpectOnStderr(string nonce) => Register(_pendingOnStderr, nonce);

        private static Task<int> Register(ConcurrentDictionary<string, TaskCompletionSource<int>> pending, string nonce)
        {
            var reply = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
            pending[nonce] = reply;
            return reply.Task;
        }

        public async Task SendAsync(byte[] request, Action<string> log)
        {
            try
            {
                using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
                await attachment.WriteAsync(request, timeout.Token);
            }
            catch (Exception error) when (error is ContainerEngineException or OperationCanceledException)
            {
                // A container that is gone has no processes left to stop.
                log($"Could not reach the stage server in {container}: {error.Message}");
            }
        }

        public void ArmNoticeFilter()
        {
            lock (_stderrLock)
                _stderrNotices.Arm();
        }

        /// <summary>Once reading has stopped: what the notice filter still holds (a partial line) goes out.</summary>
        public async Task FlushAsync(Stream stderr)
        {
            var held = new ArrayBufferWriter<byte>();
            lock (_stderrLock)
                _stderrNotices.Flush(held);
            if (held.WrittenCount > 0)
                await stderr.WriteAsync(held.WrittenMemory);
        }

        /// <summary>How many processes besides the server's own are alive; unknown counts as some.</summary>
        public async Task<int> CountSurvivorsAsync(Action<string> log)
        {
            var nonce = StageServer.NewNonce();
            var reply = Expect(nonce);
            await SendAsync(StageServer.CountRequest(nonce), log);
            var answered = await Task.WhenAny(reply, Task.Delay(TimeSpan.FromSeconds(5)));
            _pending.TryRemove(nonce, out _);
            return answered == reply ? await reply : int.MaxValue;
        }

        /// <summary>Streams output until cancelled; ends with an error when the container's streams close.</summary>
        public async Task ReadAsync(Stream stdout, Stream stderr, CancellationToken cancellationToken)
        {
            var stdoutScanner = new ServerReplyScanner(_pending.ContainsKey);
            var stderrScanner = new ServerReplyScanner(_pendingOnStderr.ContainsKey);
            var buffer = new byte[81920];
            var passThrough = new ArrayBufferWriter<byte>(buffer.Length);
            var filtered = new ArrayBufferWriter<byte>(buffer.Length);
            var replies = new List<ServerReply>();
            while (true)
            {
                var chunk = await attachment.ReadAsync(buffer, cancellationToken);
                if (chunk.EndOfStream)
                    throw new ContainerEngineException($"container '{container}' closed its output before the stage ended (the container stopped or was removed).");

                var (scanner, output, pending) = chunk.IsStderr ? (stderrScanner, stderr, _pendingOnStderr) : (stdoutScanner, stdout, _pending);
                passThrough.ResetWrittenCount();
                replies.Clear();
                scanner.Feed(buffer.AsSpan(0, chunk.Count), passThrough, replies);
                if (chunk.IsStderr && passThrough.WrittenCount > 0)
                {
                    filtered.ResetWrittenCount();
                    lock (_stderrLock)
                        _stderrNotices.Feed(passThrough.WrittenSpan, filtered);
                    if (filtered.WrittenCount > 0)
                        await output.WriteAsync(filtered.WrittenMemory, cancellationToken);
                }
                else if (passThrough.WrittenCount > 0)
                    await output.WriteAsync(passThrough.WrittenMemory, cancellationToken);
                foreach (var reply in replies)
                {
                    if (pending.TryGetValue(reply.Nonce, out var waiting))
                        waiting.TrySetResult(reply.Value);
                }
            }
        }
    }
}
