using System.Net;
using System.Runtime.CompilerServices;
using Amazon.Runtime;
using Amazon.S3;
using Amazon.S3.Model;
using GpuExecutor.Configuration;

namespace GpuExecutor.Storage;

/// <summary>
/// The only class that touches AWSSDK.S3. The client settings are the ones docs/testbed.md
/// found s3rver needs, and all are valid against AWS S3 and MinIO: path-style when configured,
/// a fixed signing region, and checksums only when required.
/// </summary>
public sealed class S3ObjectStore : IObjectStore
{
    private readonly AmazonS3Client _client;
    private readonly string _name;
    private readonly Uri _endpoint;

    public S3ObjectStore(StoreSettings settings)
    {
        _name = settings.Name;
        _endpoint = new Uri(settings.Endpoint ?? $"https://s3.{settings.Region}.amazonaws.com/");
        var config = new AmazonS3Config
        {
            ForcePathStyle = settings.PathStyle,
            AuthenticationRegion = settings.Region,
            RequestChecksumCalculation = RequestChecksumCalculation.WHEN_REQUIRED,
            ResponseChecksumValidation = ResponseChecksumValidation.WHEN_REQUIRED,
            // Retries are the fetcher's, with its own budget; one layer of them is enough.
            MaxErrorRetry = 0,
            Timeout = TimeSpan.FromMinutes(5),
        };
        if (settings.Endpoint is { } endpoint)
            config.ServiceURL = endpoint;
        else
            config.RegionEndpoint = Amazon.RegionEndpoint.GetBySystemName(settings.Region);

        _client = settings.AccessKeyId is { } accessKey && settings.SecretAccessKey is { } secretKey
            ? new AmazonS3Client(new BasicAWSCredentials(accessKey.Value, secretKey.Value), config)
            : new AmazonS3Client(config);
    }

    /// <summary>
    /// The store's clock, from the Date header of an anonymous request to its endpoint: every S3
    /// server answers one, even with a 403, and the SDK hides the header of its own responses.
    /// </summary>
    public async Task<DateTimeOffset?> ServerTimeAsync(CancellationToken cancellationToken)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(15) };
        try
        {
            using var response = await http.SendAsync(new HttpRequestMessage(HttpMethod.Head, _endpoint), cancellationToken);
            return response.Headers.Date;
        }
        catch (Exception error) when (error is HttpRequestException or TaskCanceledException && !cancellationToken.IsCancellationRequested)
        {
            throw new ObjectStoreException($"store '{_name}': {_endpoint} cannot be reached to read its clock: {error.Message}", error, transient: true);
        }
    }

    public async IAsyncEnumerable<StoredObject> ListAsync(string bucket, string prefix, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        string? continuation = null;
        do
        {
            ListObjectsV2Response page;
            try
            {
                page = await _client.ListObjectsV2Async(new ListObjectsV2Request { BucketName = bucket, Prefix = prefix, ContinuationToken = continuation, MaxKeys = 1000 }, cancellationToken);
            }
            catch (Exception error) when (IsStoreFailure(error, cancellationToken))
            {
                throw Wrap(error, $"list s3 objects under '{bucket}/{prefix}'");
            }
            foreach (var item in page.S3Objects ?? [])
                yield return new StoredObject(item.Key, item.Size ?? 0, Unquote(item.ETag));
            continuation = page.IsTruncated == true ? page.NextContinuationToken : null;
        }
        while (continuation is not null);
    }

    public async Task<StoredObject?> HeadAsync(string bucket, string key, CancellationToken cancellationToken)
    {
        try
        {
            var head = await _client.GetObjectMetadataAsync(bucket, key, cancellationToken);
            return new StoredObject(key, head.ContentLength, Unquote(head.ETag));
        }
        catch (AmazonS3Exception error) when (error.StatusCode == HttpStatusCode.NotFound)
        {
            return null;
        }
        catch (Exception error) when (IsStoreFailure(error, cancellationToken))
        {
            throw Wrap(error, $"read the metadata of '{bucket}/{key}'");
        }
    }

    public async Task<Stream> OpenReadAsync(string bucket, string key, long offset, long? length, CancellationToken cancellationToken)
    {
        var request = new GetObjectRequest { BucketName = bucket, Key = key };
        // A closed range always: s3rver gets suffix ranges ("bytes=-N") wrong (docs/testbed.md).
        if (offset > 0 || length is not null)
            request.ByteRange = new ByteRange(offset, length is { } count ? offset + count - 1 : long.MaxValue - 1);
        try
        {
            var response = await _client.GetObjectAsync(request, cancellationToken);
            return new ResponseStream(response);
        }
        catch (Exception error) when (IsStoreFailure(error, cancellationToken))
        {
            throw Wrap(error, $"read '{bucket}/{key}'");
        }
    }

    /// <summary>Files from this size up go as multipart uploads, in parts of at least this size.</summary>
    public const long MultipartThreshold = 64L << 20;

    /// <summary>
    /// When the caller already uploads several files side by side, files up to this size go in
    /// one PUT each. Splitting them adds requests but no parallelism, and servers that assemble
    /// parts by copying them (s3rver does) write every byte twice: rclone's 4 × 512 MiB took 24 s
    /// multipart against 9 s in single PUTs here. Above it, a failed PUT would cost too much to
    /// send again, and multipart retries a part.
    /// </summary>
    public const long SinglePutLimitBesideOthers = 1L << 30;
    private const long MinimumPartSize = 16L << 20;
    private const int MaximumParts = 10_000;
    private const int ParallelParts = 8;

    public async Task PutFileAsync(string bucket, string key, string path, long length, CancellationToken cancellationToken, bool manyFilesInParallel = false)
    {
        if (length < MultipartThreshold || (manyFilesInParallel && length <= SinglePutLimitBesideOthers))
        {
            await PutAsync(bucket, key, () => new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, bufferSize: 1 << 16, FileOptions.SequentialScan), cancellationToken);
            return;
        }

        string uploadId;
        try
        {
            var started = await _client.InitiateMultipartUploadAsync(new InitiateMultipartUploadRequest { BucketName = bucket, Key = key }, cancellationToken);
            uploadId = started.UploadId;
        }
        catch (Exception error) when (IsStoreFailure(error, cancellationToken))
        {
            throw Wrap(error, $"start a multipart upload of '{bucket}/{key}'");
        }

        var partSize = Math.Max(MinimumPartSize, (length + MaximumParts - 1) / MaximumParts);
        var partCount = (int)((length + partSize - 1) / partSize);
        var etags = new string[partCount];
        try
        {
            await Parallel.ForEachAsync(Enumerable.Range(0, partCount), new ParallelOptions { MaxDegreeOfParallelism = ParallelParts, CancellationToken = cancellationToken }, async (index, token) =>
            {
                var offset = index * partSize;
                var request = new UploadPartRequest
                {
                    BucketName = bucket,
                    Key = key,
                    UploadId = uploadId,
                    PartNumber = index + 1,
                    FilePath = path,
                    FilePosition = offset,
                    PartSize = Math.Min(partSize, length - offset),
                    // s3rver stores aws-chunked framing as part of the object (docs/testbed.md).
                    UseChunkEncoding = false,
                };
                var response = await _client.UploadPartAsync(request, token);
                etags[index] = response.ETag;
            });
            await _client.CompleteMultipartUploadAsync(new CompleteMultipartUploadRequest
            {
                BucketName = bucket,
                Key = key,
                UploadId = uploadId,
                PartETags = etags.Select((etag, index) => new PartETag(index + 1, etag)).ToList(),
            }, cancellationToken);
        }
        catch (Exception error) when (IsStoreFailure(error, cancellationToken))
        {
            await AbortQuietlyAsync(bucket, key, uploadId);
            throw Wrap(error, $"upload '{bucket}/{key}' in {partCount} parts");
        }
        catch (OperationCanceledException)
        {
            await AbortQuietlyAsync(bucket, key, uploadId);
            throw;
        }
    }

    /// <summary>
    /// An upload that failed leaves parts that cost storage until aborted; an abort that fails too
    /// (s3rver answers 405) only leaves them to the bucket's lifecycle rules.
    /// </summary>
    private async Task AbortQuietlyAsync(string bucket, string key, string uploadId)
    {
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            await _client.AbortMultipartUploadAsync(new AbortMultipartUploadRequest { BucketName = bucket, Key = key, UploadId = uploadId }, timeout.Token);
        }
        catch (Exception error) when (error is AmazonServiceException or AmazonClientException or HttpRequestException or IOException or OperationCanceledException)
        {
        }
    }

    public Task PutBytesAsync(string bucket, string key, ReadOnlyMemory<byte> content, CancellationToken cancellationToken) =>
        PutAsync(bucket, key, () => new MemoryStream(content.ToArray(), writable: false), cancellationToken);

    private async Task PutAsync(string bucket, string key, Func<Stream> open, CancellationToken cancellationToken)
    {
        try
        {
            await using var body = open();
            // The SDK compares the ETag it gets back with the MD5 of what it sent, so a PUT that
            // returns is verified.
            await _client.PutObjectAsync(new PutObjectRequest { BucketName = bucket, Key = key, InputStream = body, AutoCloseStream = false, UseChunkEncoding = false }, cancellationToken);
        }
        catch (Exception error) when (IsStoreFailure(error, cancellationToken))
        {
            throw Wrap(error, $"write '{bucket}/{key}'");
        }
    }

    public async Task DeleteAsync(string bucket, string key, CancellationToken cancellationToken)
    {
        try
        {
            await _client.DeleteObjectAsync(bucket, key, cancellationToken);
        }
        catch (AmazonS3Exception error) when (error.StatusCode == HttpStatusCode.NotFound)
        {
        }
        catch (Exception error) when (IsStoreFailure(error, cancellationToken))
        {
            throw Wrap(error, $"delete '{bucket}/{key}'");
        }
    }

    private static string Unquote(string? etag) => (etag ?? "").Trim('"');

    private static bool IsStoreFailure(Exception error, CancellationToken cancellationToken) =>
        !(error is OperationCanceledException && cancellationToken.IsCancellationRequested)
        && error is AmazonServiceException or AmazonClientException or HttpRequestException or IOException or OperationCanceledException or UnauthorizedAccessException;

    private ObjectStoreException Wrap(Exception error, string action) => new(
        error switch
        {
            AmazonServiceException service => $"could not {action} in store '{_name}': {(int)service.StatusCode} {service.ErrorCode}: {service.Message}",
            _ => $"could not {action} in store '{_name}': {error.Message}",
        },
        error,
        transient: error is not AmazonServiceException service2 || (int)service2.StatusCode >= 500 || service2.StatusCode is HttpStatusCode.RequestTimeout or HttpStatusCode.TooManyRequests);

    /// <summary>Keeps the SDK's response alive for as long as its body is read.</summary>
    private sealed class ResponseStream(GetObjectResponse response) : Stream
    {
        private readonly Stream _body = response.ResponseStream;

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        // The SDK's own errors while the body streams (a reset, its checksum check) leave as the
        // project's ObjectStoreException, like every other error of this adapter.
        public override int Read(byte[] buffer, int offset, int count)
        {
            try
            {
                return _body.Read(buffer, offset, count);
            }
            catch (AmazonClientException error)
            {
                throw new ObjectStoreException($"reading '{response.BucketName}/{response.Key}' failed: {error.Message}", error, transient: true);
            }
        }

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            try
            {
                return await _body.ReadAsync(buffer, cancellationToken);
            }
            catch (AmazonClientException error)
            {
                throw new ObjectStoreException($"reading '{response.BucketName}/{response.Key}' failed: {error.Message}", error, transient: true);
            }
        }

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        protected override void Dispose(bool disposing)
        {
            if (disposing)
                response.Dispose();
            base.Dispose(disposing);
        }
    }

    public void Dispose() => _client.Dispose();
}
