using System.Collections.Concurrent;
using System.Text;
using System.Threading.Channels;
using GpuExecutor.Containers;

namespace GpuExecutor.Tests.Fakes;

/// <summary>
/// A container engine in memory, for driving workflows without a daemon: containers with labels,
/// created, found, removed; and an attachment that answers the stage server's protocol the way
/// <see cref="StageServer"/>'s bash loop does (a reply per request, on stdout and stderr).
/// </summary>
public sealed class FakeContainerDriver : IContainerDriver
{
    private sealed class FakeContainer(ContainerSummary summary, ContainerSpec? spec)
    {
        public ContainerSummary Summary { get; } = summary;
        public ContainerSpec? Spec { get; } = spec;
        public bool Running { get; set; } = true;
        public TaskCompletionSource<int> Stopped { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    private readonly ConcurrentDictionary<string, FakeContainer> _containers = new();
    private int _sequence;

    /// <summary>While set, every call fails as a stopped daemon's would.</summary>
    public bool Unreachable { get; set; }

    /// <summary>What a stage script does here: its exit code and its output, from its text.</summary>
    public Func<string, (int ExitCode, string Output)> RunScript { get; set; } = _ => (0, "");

    /// <summary>What a script's stage writes on the container's stderr, before its exit code's reply: for a script and its run request's nonce.</summary>
    public Func<string, string, string> ScriptStderr { get; set; } = (_, _) => "";

    /// <summary>Every spec created, in order.</summary>
    public ConcurrentQueue<ContainerSpec> Created { get; } = new();

    /// <summary>Every container removed, by name, in order.</summary>
    public ConcurrentQueue<string> Removed { get; } = new();

    /// <summary>Every script run, as the stage server would run it.</summary>
    public ConcurrentQueue<(string Container, string Script)> Scripts { get; } = new();

    /// <summary>Every signal request a stage server received, in order.</summary>
    public ConcurrentQueue<(string Container, string Signal)> Signals { get; } = new();

    /// <summary>A container some other job (or an earlier attempt) left, with its labels.</summary>
    public void Add(string name, IReadOnlyDictionary<string, string> labels, bool running = true)
    {
        var id = NewId();
        _containers[name] = new FakeContainer(new ContainerSummary(id, name, labels, DateTimeOffset.UtcNow), null) { Running = running };
    }

    public IReadOnlyList<string> Names => _containers.Keys.Order(StringComparer.Ordinal).ToList();

    public Task<bool> ImageExistsAsync(string image, CancellationToken cancellationToken) => Task.FromResult(true);

    public Task PullImageAsync(string image, Action<string> progress, CancellationToken cancellationToken) => Task.CompletedTask;

    public Task<string> CreateAndStartAsync(ContainerSpec spec, CancellationToken cancellationToken)
    {
        var id = NewId();
        if (!_containers.TryAdd(spec.Name, new FakeContainer(new ContainerSummary(id, spec.Name, spec.Labels, DateTimeOffset.UtcNow), spec)))
            throw new ContainerEngineException($"Conflict. The container name \"/{spec.Name}\" is already in use.");
        Created.Enqueue(spec);
        return Task.FromResult(id);
    }

    public Task<IReadOnlyList<ContainerSummary>> FindAsync(IReadOnlyDictionary<string, string> labels, CancellationToken cancellationToken) =>
        Unreachable ? throw DaemonDown() : Task.FromResult<IReadOnlyList<ContainerSummary>>(_containers.Values
            .Where(container => labels.All(label => container.Summary.Labels.TryGetValue(label.Key, out var value) && value == label.Value))
            .Select(container => container.Summary)
            .ToList());

    public Task RemoveAsync(string idOrName, CancellationToken cancellationToken)
    {
        var found = Find(idOrName);
        if (found is not null && _containers.TryRemove(found.Summary.Name, out _))
        {
            Removed.Enqueue(found.Summary.Name);
            found.Stopped.TrySetResult(137);
        }
        return Task.CompletedTask;
    }

    public Task<ContainerState?> InspectStateAsync(string idOrName, CancellationToken cancellationToken) =>
        Unreachable ? throw DaemonDown() : Task.FromResult(Find(idOrName) is { } found ? new ContainerState(found.Running, found.Running ? 0 : 137) : null);

    /// <summary>What <see cref="IncidentsSinceAsync"/> reports: nothing happened, unless a test says otherwise.</summary>
    public ContainerIncidents Incidents { get; set; } = new(0, 0, false, false, null, null, 0);

    public Task<ContainerIncidents> IncidentsSinceAsync(string idOrName, DateTimeOffset since, CancellationToken cancellationToken) =>
        Unreachable ? throw DaemonDown() : Task.FromResult(Incidents);

    public async Task<int> WaitUntilStoppedAsync(string idOrName, CancellationToken cancellationToken)
    {
        var found = Find(idOrName) ?? throw new ContainerNotFoundException(idOrName);
        if (!found.Running)
            return 137;
        return await found.Stopped.Task.WaitAsync(cancellationToken);
    }

    public Task<IContainerAttachment> AttachAsync(string container, CancellationToken cancellationToken) =>
        Find(container) is null
            ? throw new ContainerNotFoundException(container)
            : Task.FromResult<IContainerAttachment>(new StageServerAttachment(this, container));

    /// <summary>The fake daemon keeps no log and never restarts under a stage: the reconnect that reads it is tested against a real dockerd.</summary>
    public Task<IContainerOutput> ReadLogAsync(string container, DateTimeOffset since, bool follow, CancellationToken cancellationToken) =>
        throw new NotSupportedException("the fake daemon keeps no container log; see DaemonRestartTests for the reconnect against a real dockerd");

    /// <summary>An engine as a test bed's dockerd describes itself (live-restore on, docker-init present), or down.</summary>
    public EngineDescription Description { get; set; } = new("28.0.0", "1.48", LiveRestore: true, ["runc"]);

    public Task<EngineDescription> DescribeAsync(CancellationToken cancellationToken) =>
        Unreachable ? throw DaemonDown() : Task.FromResult(Description);

    public void Dispose()
    {
    }

    private static ContainerEngineException DaemonDown() =>
        new("could not reach the Docker daemon: connect: no such file or directory (fake)");

    private FakeContainer? Find(string idOrName) =>
        _containers.TryGetValue(idOrName, out var byName) ? byName : _containers.Values.FirstOrDefault(container => container.Summary.Id == idOrName);

    private string NewId() => Interlocked.Increment(ref _sequence).ToString("x64", System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>The stage server's side of an attachment: requests in on stdin, output and replies out.</summary>
    private sealed class StageServerAttachment(FakeContainerDriver driver, string container) : IContainerAttachment
    {
        private readonly Channel<(byte[] Bytes, bool IsStderr)> _output = Channel.CreateUnbounded<(byte[], bool)>();
        private readonly StringBuilder _input = new();
        private (byte[] Bytes, bool IsStderr, int Offset)? _pending;

        public Task WriteAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
        {
            _input.Append(Encoding.UTF8.GetString(data.Span));
            while (true)
            {
                var text = _input.ToString();
                var firstEnd = text.IndexOf('\n');
                if (firstEnd < 0)
                    return Task.CompletedTask;
                var request = text[..firstEnd].Split(' ');
                if (request[0] == "run")
                {
                    var scriptEnd = text.IndexOf('\n', firstEnd + 1);
                    if (scriptEnd < 0)
                        return Task.CompletedTask;
                    var script = Unescape(text[(firstEnd + 1)..scriptEnd]);
                    _input.Remove(0, scriptEnd + 1);
                    driver.Scripts.Enqueue((container, script));
                    var (exitCode, output) = driver.RunScript(script);
                    if (output.Length > 0)
                        _output.Writer.TryWrite((Encoding.UTF8.GetBytes(output), false));
                    if (driver.ScriptStderr(script, request[1]) is { Length: > 0 } errors)
                        _output.Writer.TryWrite((Encoding.UTF8.GetBytes(errors), true));
                    Reply(request[1], exitCode, alsoOnStderr: true);
                }
                else
                {
                    _input.Remove(0, firstEnd + 1);
                    // count: no process of the stage is left; signal: nothing to answer.
                    if (request[0] == "count")
                        Reply(request[1], 0, alsoOnStderr: false);
                    else if (request[0] == "signal" && request.Length == 3)
                        driver.Signals.Enqueue((container, request[2]));
                }
            }
        }

        private void Reply(string nonce, int value, bool alsoOnStderr)
        {
            var reply = Encoding.ASCII.GetBytes($"\u001egpu-executor:{nonce}:{value}\n");
            if (alsoOnStderr)
                _output.Writer.TryWrite((reply, true));
            _output.Writer.TryWrite((reply, false));
        }

        /// <summary>What the server's printf %b makes of the request line (see StageServer.RunRequest).</summary>
        private static string Unescape(string encoded) => encoded.Replace("\\n", "\n", StringComparison.Ordinal).Replace("\\\\", "\\", StringComparison.Ordinal);

        public async Task<AttachmentChunk> ReadAsync(byte[] buffer, CancellationToken cancellationToken)
        {
            if (_pending is null)
            {
                var (bytes, isStderr) = await _output.Reader.ReadAsync(cancellationToken);
                _pending = (bytes, isStderr, 0);
            }
            var (pendingBytes, pendingIsStderr, offset) = _pending.Value;
            var count = Math.Min(buffer.Length, pendingBytes.Length - offset);
            pendingBytes.AsSpan(offset, count).CopyTo(buffer);
            _pending = offset + count == pendingBytes.Length ? null : (pendingBytes, pendingIsStderr, offset + count);
            return new AttachmentChunk(count, pendingIsStderr, EndOfStream: false);
        }

        public void Dispose() => _output.Writer.TryComplete();
    }
}
