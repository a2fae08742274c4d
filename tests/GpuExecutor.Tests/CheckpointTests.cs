using System.Text;
using GpuExecutor.Checkpoints;
using GpuExecutor.Outcomes;
using GpuExecutor.Protocol;

namespace GpuExecutor.Tests;

public sealed class CheckpointRequestTests
{
    /// <summary>The request as prepare makes it: the identity (and its run key) from the payload, then the request.</summary>
    private static CheckpointRequest? FromJob(IReadOnlyDictionary<string, string> variables, long jobId = 100, long projectId = 42) =>
        CheckpointRequest.FromJob(variables, TestPayloads.Identity(jobId, projectId, variables));

    private static CheckpointRequest? Request(params (string Name, string Value)[] variables) =>
        FromJob(variables.ToDictionary(variable => variable.Name, variable => variable.Value));

    [Fact]
    public void Checkpoints_are_off_unless_the_job_turns_them_on()
    {
        Assert.Null(Request());
        Assert.Null(Request(("CHECKPOINTS", "off")));
        Assert.NotNull(Request(("CHECKPOINTS", "on")));
        Assert.NotNull(Request(("CHECKPOINTS", "TRUE")));
    }

    [Fact]
    public void The_default_run_key_comes_from_the_job_and_never_its_id()
    {
        var first = Request(("CHECKPOINTS", "on"))!;
        var retried = FromJob(new Dictionary<string, string> { ["CHECKPOINTS"] = "on" }, jobId: 101)!;
        Assert.Equal(first.RunKey, retried.RunKey);
        Assert.DoesNotContain("100", first.RunKey);
        Assert.True(CheckpointRequest.IsRunKey(first.RunKey));
    }

    [Fact]
    public void A_named_run_is_scoped_to_the_project()
    {
        var request = Request(("CHECKPOINTS", "on"), ("CHECKPOINT_RUN_KEY", "llama-7b.v2"))!;
        Assert.Equal("p42-llama-7b.v2", request.RunKey);
        var otherProject = FromJob(new Dictionary<string, string> { ["CHECKPOINTS"] = "on", ["CHECKPOINT_RUN_KEY"] = "llama-7b.v2" }, projectId: 43)!;
        Assert.NotEqual(request.RunKey, otherProject.RunKey);
    }

    [Theory]
    [InlineData("latest", true, null)]
    [InlineData("", true, null)]
    [InlineData("off", false, null)]
    [InlineData("17", true, 17L)]
    public void Restore_can_be_turned_off_or_pinned(string value, bool restore, long? pinned)
    {
        var request = Request(("CHECKPOINTS", "on"), ("CHECKPOINT_RESTORE", value))!;
        Assert.Equal((restore, pinned), (request.Restore, request.PinnedGeneration));
    }

    [Theory]
    [InlineData("CHECKPOINTS", "maybe")]
    [InlineData("CHECKPOINT_RUN_KEY", "../other-project")]
    [InlineData("CHECKPOINT_RUN_KEY", "a/b")]
    [InlineData("CHECKPOINT_RUN_KEY", "-leading-dash")]
    [InlineData("CHECKPOINT_RUN_KEY", "has space")]
    [InlineData("CHECKPOINT_RESTORE", "-1")]
    [InlineData("CHECKPOINT_RESTORE", "0")]
    [InlineData("CHECKPOINT_RESTORE", "1e9")]
    [InlineData("CHECKPOINT_RESTORE", "newest")]
    public void Bad_values_are_build_failures_naming_the_variable(string name, string value)
    {
        var variables = new Dictionary<string, string> { ["CHECKPOINTS"] = "on", [name] = value };
        var error = Assert.Throws<BuildFailureException>(() => FromJob(variables));
        Assert.Contains(name, error.Message);
    }
}

public sealed class CheckpointManifestTests
{
    private const string Sha = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    private static string Manifest(string files, int generation = 3, string run = "run-a") =>
        $$"""{"format":1,"run_key":"{{run}}","generation":{{generation}},"job_id":9,"committed_at":"2026-11-28T00:00:00Z","files":[{{files}}]}""";

    private static string File(string path, string sha = Sha, long size = 5, int mode = 420) =>
        $$"""{"path":{{System.Text.Json.JsonSerializer.Serialize(path)}},"sha256":"{{sha}}","size":{{size}},"mode":{{mode}}}""";

    [Fact]
    public void A_manifest_written_by_commit_parses_back()
    {
        var manifest = new CheckpointManifest(1, "run-a", 3, 9, DateTimeOffset.UnixEpoch, [new CheckpointFile("model/w.bin", Sha, 5, 420), new CheckpointFile("a", Sha, 5, 384)]);
        var parsed = CheckpointManifest.Parse(manifest.ToJson(), "run-a", 3);
        Assert.Equal(["a", "model/w.bin"], parsed.Files.Select(file => file.Path));
        Assert.Equal(10, parsed.TotalBytes);
    }

    [Theory]
    [InlineData("../x", "'..'")]
    [InlineData("a/../../x", "'..'")]
    [InlineData("/etc/passwd", "absolute")]
    [InlineData("a//b", "empty path segment")]
    [InlineData("a/", "empty path segment")]
    [InlineData("", "empty path")]
    [InlineData("a\u0000b", "control character")]
    public void Unsafe_paths_refuse_the_whole_manifest(string path, string reason)
    {
        var json = Manifest(File("fine.bin") + "," + File(path));
        var error = Assert.Throws<BuildFailureException>(() => CheckpointManifest.Parse(Encoding.UTF8.GetBytes(json), "run-a", 3));
        Assert.Contains(reason, error.Message);
        Assert.Contains("Nothing was restored", error.Message);
    }

    [Theory]
    [InlineData("[" + "{\"path\":\"a\",\"sha256\":\"" + Sha + "\",\"size\":5,\"mode\":420,\"symlink\":\"/etc\"}" + "]", "")]
    public void Members_this_executor_never_writes_are_refused(string files, string _)
    {
        var json = Manifest("").Replace("\"files\":[]", "\"files\":" + files);
        Assert.Throws<BuildFailureException>(() => CheckpointManifest.Parse(Encoding.UTF8.GetBytes(json), "run-a", 3));
    }

    [Fact]
    public void Other_refusals_say_why()
    {
        Assert.Contains("setuid", Refusal(Manifest(File("a", mode: 2541)))); // 04755
        Assert.Contains("appears twice", Refusal(Manifest(File("a") + "," + File("a"))));
        Assert.Contains("both a file and the directory", Refusal(Manifest(File("a") + "," + File("a/b"))));
        Assert.Contains("SHA-256", Refusal(Manifest(File("a", sha: "xyz"))));
        Assert.Contains("negative size", Refusal(Manifest(File("a", size: -1))));
        Assert.Contains("names run", Refusal(Manifest(File("a"), generation: 4)));
        Assert.Contains("names run", Refusal(Manifest(File("a"), run: "run-b")));
        Assert.Contains("not valid JSON", Refusal("{"));
    }

    private static string Refusal(string json) =>
        Assert.Throws<BuildFailureException>(() => CheckpointManifest.Parse(Encoding.UTF8.GetBytes(json), "run-a", 3)).Message;

    [Theory]
    [InlineData("model.pt.tmp", true)]
    [InlineData("shard.partial", true)]
    [InlineData("step-40-unfinished", true)]
    [InlineData(".checkpoint-complete", true)]
    [InlineData("model.pt", false)]
    [InlineData("tmp.model", false)]
    public void In_progress_names_are_recognised(string name, bool inProgress) =>
        Assert.Equal(inProgress, CheckpointPaths.LooksInProgress(name));
}
